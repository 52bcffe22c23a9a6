"""The one error every dataset reader raises when its files are not where it looks."""
from __future__ import annotations


class DataNotFoundError(RuntimeError):
    """The dataset's files are not in the data directory, or are damaged (nothing is downloaded).

    Its message is one line that says where to put what.
    """
