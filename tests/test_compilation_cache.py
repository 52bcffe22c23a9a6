"""The programs' persistent compilation cache: where it goes, and that it can be turned off."""
import os

import jax

from jsnn.compilation_cache import enable_compilation_cache


def test_cache_folder_from_the_environment_and_off(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache({"JSNN_COMPILATION_CACHE": "off"}) is None
        assert jax.config.jax_compilation_cache_dir == before
        folder = enable_compilation_cache({"JSNN_COMPILATION_CACHE": str(tmp_path / "c")})
        assert folder == str(tmp_path / "c") and jax.config.jax_compilation_cache_dir == folder
        assert enable_compilation_cache({}) == os.path.expanduser("~/.cache/jsnn/jax")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
