"""import jsnn selects XLA's own CPU convolutions (jsnn/xla_flags.py), and leaves a user's choice alone."""
import os
import subprocess
import sys

import pytest

from jsnn import xla_flags


def test_configure_adds_the_flag_first(monkeypatch):
    """First: XLA ignores every flag after a token that is not a --flag."""
    monkeypatch.setattr(xla_flags, "_backends_started", lambda: False)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 not_a_flag=1"}
    assert xla_flags.configure(env)
    assert env["XLA_FLAGS"].split() == [xla_flags.CPU_CONV_FLAG, "--xla_force_host_platform_device_count=8",
                                        "not_a_flag=1"]


def test_configure_warns_when_too_late(monkeypatch):
    monkeypatch.setattr(xla_flags, "_backends_started", lambda: True)
    env = {}
    with pytest.warns(UserWarning, match="Import jsnn before the first JAX computation"):
        assert not xla_flags.configure(env)
    assert env == {}


def test_configure_keeps_the_users_choice():
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
    assert not xla_flags.configure(mine)
    assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    opted_out = {"JSNN_KEEP_XLA_FLAGS": "1"}
    assert not xla_flags.configure(opted_out)
    assert "XLA_FLAGS" not in opted_out


COMPILED_CONV = """
import jsnn, jax, jax.numpy as jnp
f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
print("YNN" if "__ynn_fusion" in f.lower(jnp.zeros((16, 32, 32, 64)), jnp.zeros((3, 3, 64, 128))).compile().as_text() else "EIGEN")
"""


def _compiled_conv_library(**env):
    out = subprocess.run([sys.executable, "-c", COMPILED_CONV], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **env})
    assert out.returncode == 0, out.stderr
    return out.stdout.split()[-1]


def test_flag_takes_effect_in_a_fresh_process():
    """The flag really moves the convolution off YNNPACK (and without it, this jaxlib uses YNNPACK:
    the second assertion fails if a jaxlib update changes the default, time to re-measure)."""
    assert _compiled_conv_library() == "EIGEN"
    assert _compiled_conv_library(XLA_FLAGS="--xla_cpu_multi_thread_eigen=true not_a_flag=2") == "EIGEN"
    assert _compiled_conv_library(JSNN_KEEP_XLA_FLAGS="1") == "YNN"
