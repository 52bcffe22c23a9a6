"""Optional packages the tests compare against, imported by the test that uses them: without the
package only the tests that use it are skipped, not every test of their file."""
import importlib

import pytest


class Optional:
    """Module ``name``, imported on the first attribute a test reads from it (``pytest.importorskip``:
    that test is skipped when the package is missing)."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attribute: str):
        if attribute.startswith(("_", "pytest")):  # what pytest's collection looks up on module globals
            raise AttributeError(attribute)
        pytest.importorskip(self._name.split(".")[0])
        return getattr(importlib.import_module(self._name), attribute)
