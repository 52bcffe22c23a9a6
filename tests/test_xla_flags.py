"""``import jsnn`` (and the programs at start-up) select XLA's own CPU convolutions (jsnn/xla_flags.py): a
user's choice wins, a jaxlib the flag was not checked with is left alone, and each skip is said in one line."""
import io
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


def test_unknown_jaxlib_is_left_alone_in_one_line(monkeypatch):
    """XLA aborts on a flag its release does not know: under any jaxlib not in KNOWN_JAXLIB (a GPU user's
    upgraded one, faked here) XLA_FLAGS stays as it is, and one line (once per process) says why."""
    monkeypatch.setattr(xla_flags, "_said", set())
    env, said = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, io.StringIO()
    assert not xla_flags.configure(env, jaxlib="0.11.0", stream=said)
    assert not xla_flags.configure(env, jaxlib="0.11.0", stream=said)
    assert env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    lines = said.getvalue().splitlines()
    assert len(lines) == 1 and "jaxlib 0.11.0" in lines[0] and xla_flags.CPU_CONV_FLAG in lines[0]
    monkeypatch.setattr(xla_flags, "jaxlib_version", lambda: "0.9.0")  # the installed version is what is judged
    assert not xla_flags.configure({}, stream=said)
    assert xla_flags.configure({}, jaxlib=xla_flags.KNOWN_JAXLIB[-1], stream=said)


def test_installed_jaxlib_is_known():
    """The test environment's jaxlib is one the flag was checked with (else the suite runs on YNNPACK)."""
    assert xla_flags.jaxlib_version() in xla_flags.KNOWN_JAXLIB


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


# A user's own script: JAX, then jsnn (import jax starts no backend), then a convolution; optionally under
# another jaxlib, faked in the package metadata jsnn reads.
USER_SCRIPT = """
import sys
if "fake-jaxlib" in sys.argv:
    import importlib.metadata as metadata
    real = metadata.version
    metadata.version = lambda name: "0.11.0" if name == "jaxlib" else real(name)
import jax, jax.numpy as jnp
import jsnn
f = jax.jit(lambda x, k: jax.lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")))
text = f.lower(jnp.zeros((16, 32, 32, 64)), jnp.zeros((3, 3, 64, 128))).compile().as_text()
print("YNN" if "__ynn_fusion" in text else "EIGEN")
"""


def _compiled_conv_libraries(*runs):
    """The library of the convolution compiled by each (program source, arguments, environment), all at once;
    with what each wrote on stderr."""
    outs = run_together([[sys.executable, "-c", source, *args] for source, args, _ in runs], timeout=300, cwd=ROOT,
                        envs=[{**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", **env} for _, _, env in runs])
    for out in outs:
        assert out.returncode == 0, out.stderr
    return [(out.stdout.split()[-1], out.stderr) for out in outs]


def test_flag_takes_effect_in_a_program_and_a_users_script():
    """The flag really moves the convolution off YNNPACK, in the programs and in a user's script that imports
    jsnn before its first JAX computation; under an unknown jaxlib it is not set, and one line says so (without
    the flag, this jaxlib uses YNNPACK: that case fails if a jaxlib update changes the default, time to
    re-measure)."""
    got = _compiled_conv_libraries((COMPILED_CONV, [], {}),
                                   (COMPILED_CONV, [], {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true not_a_flag=2"}),
                                   (COMPILED_CONV, [], {"JSNN_KEEP_XLA_FLAGS": "1"}),
                                   (USER_SCRIPT, [], {}),
                                   (USER_SCRIPT, ["fake-jaxlib"], {}))
    assert [library for library, _ in got] == ["EIGEN", "EIGEN", "YNN", "EIGEN", "YNN"]
    assert not any("jsnn:" in err for _, err in got[:4])
    assert sum("jaxlib 0.11.0 is not one" in line for line in got[4][1].splitlines()) == 1
