"""jsnn's programs select XLA's own CPU convolutions at start-up (jsnn/xla_flags.py); a user's choice wins,
and ``import jsnn`` changes nothing."""
import os
import sys

from jsnn import xla_flags
from tests.programs import run_together

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_configure_adds_the_flag_first():
    """First: XLA ignores every flag after a token that is not a --flag."""
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 not_a_flag=1"}
    assert xla_flags.configure(env)
    assert env["XLA_FLAGS"].split() == [xla_flags.CPU_CONV_FLAG, "--xla_force_host_platform_device_count=8",
                                        "not_a_flag=1"]
    assert not xla_flags.configure(env)  # once
    assert env["XLA_FLAGS"].count(xla_flags.CPU_CONV_FLAG) == 1


def test_configure_keeps_the_users_choice():
    mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
    assert not xla_flags.configure(mine)
    assert mine["XLA_FLAGS"] == "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
    opted_out = {"JSNN_KEEP_XLA_FLAGS": "1"}
    assert not xla_flags.configure(opted_out)
    assert "XLA_FLAGS" not in opted_out


# The programs' start-up: every program's imports (nothing may start a JAX backend there), then
# run_cleanly, which sets the flag before main() runs; then one convolution is compiled.
COMPILED_CONV = """
import importlib.util, sys
sys.path.insert(0, "train")
for name in ("dense", "edge_popup", "imp", "ticket", "export", "theory"):  # the programs' imports
    spec = importlib.util.spec_from_file_location(f"program_{name}", f"train/{name}.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
import flags
import jax, jax.numpy as jnp

def main():
    f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                          dimension_numbers=("NHWC", "HWIO", "NHWC")))
    text = f.lower(jnp.zeros((16, 32, 32, 64)), jnp.zeros((3, 3, 64, 128))).compile().as_text()
    print("YNN" if "__ynn_fusion" in text else "EIGEN")

flags.run_cleanly(main)
"""


def _compiled_conv_libraries(*envs) -> list[str]:
    """The library of the convolution compiled by a program started with each of ``envs`` (all at once)."""
    outs = run_together([[sys.executable, "-c", COMPILED_CONV]] * len(envs), timeout=300, cwd=ROOT,
                        envs=[{**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **env} for env in envs])
    for out in outs:
        assert out.returncode == 0, out.stderr
    return [out.stdout.split()[-1] for out in outs]


def test_flag_takes_effect_in_a_program():
    """The flag really moves the convolution off YNNPACK (and without it, this jaxlib uses YNNPACK:
    the last one fails if a jaxlib update changes the default, time to re-measure)."""
    assert _compiled_conv_libraries({}, {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true not_a_flag=2"},
                                    {"JSNN_KEEP_XLA_FLAGS": "1"}) == ["EIGEN", "EIGEN", "YNN"]
