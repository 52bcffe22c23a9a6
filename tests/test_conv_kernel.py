"""jsnn.conv_kernel: the bf16 convolution kernel (the AMX build, or the AVX512-BF16 build on a CPU without AMX)
against a float64 NumPy reference on the same bf16 operands."""
import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import conv, conv_kernel, native
from tests.programs import CAN_PIN_TWO_CPUS, output_on_one_and_two_cpus, two_device_script
from tests.reference import assert_close, conv_reference, conv_reference_grads

# the tests that run the kernel need a CPU with AMX or AVX512-BF16 (whichever build this CPU runs);
# the fallbacks at the end run everywhere
needs_kernel = pytest.mark.skipif(conv_kernel.unavailable() is not None,
                                  reason=f"bf16 convolution kernel unavailable: {conv_kernel.unavailable()}")

# (N, H, W, Cin, Cout, k, padding): odd sizes, 1x1 and 5x5 kernels, padding below and at k // 2,
# pixel counts that are not multiples of the 32-pixel blocks, channel counts that are not multiples of
# the tiles' 32 (padded with zeros inside the kernel)
SHAPES = [(2, 8, 8, 32, 64, 3, 1), (3, 5, 7, 64, 32, 3, 1), (2, 6, 6, 32, 96, 1, 0), (1, 9, 9, 32, 64, 5, 2),
          (2, 8, 8, 32, 32, 3, 0), (1, 3, 4, 64, 64, 3, 2), (5, 2, 2, 32, 32, 3, 1), (2, 8, 8, 16, 32, 3, 1),
          (3, 5, 7, 48, 20, 3, 1), (1, 9, 9, 40, 50, 5, 2), (2, 6, 6, 3, 64, 1, 0)]


def _bf16_operands(shape, seed=0):
    n, h, w, cin, cout, k, _ = shape
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, h, w, cin)), jnp.bfloat16)
    kernel = jnp.asarray(rng.standard_normal((k, k, cin, cout)), jnp.bfloat16)
    return x, kernel


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_both_gradients_equal_the_float64_reference(shape):
    x, kernel = _bf16_operands(shape)
    padding = shape[-1]
    out = jax.jit(conv_kernel.conv, static_argnums=2)(x, kernel, padding)
    assert_close(out, conv_reference(x, kernel, padding))
    g = jnp.asarray(np.random.default_rng(1).standard_normal(out.shape), jnp.bfloat16)
    dx_ref, dk_ref = conv_reference_grads(x, kernel, padding, g)
    kh = kernel.shape[0]
    # the kernels' f32 gradients, before the VJP rounds them to the operands' dtype: the backward call's
    dx, dk = jax.jit(lambda x, k, g: conv_kernel._call("backward", [x.shape, k.shape], x, k, g, pad=padding))(
        x, kernel, g)
    assert_close(dx, dx_ref)
    assert_close(dk, dk_ref)
    # its input gradient is the forward kernel on the flipped kernel: the same sums in the same order
    alone = jax.jit(lambda g, k: conv_kernel._call("forward", x.shape, g, k, pad=kh - 1 - padding, flip=1))(g, kernel)
    np.testing.assert_array_equal(np.asarray(dx), np.asarray(alone))
    # the VJP returns exactly those, rounded to the bf16 operands' dtype
    vjp_dx, vjp_dk = jax.jit(jax.grad(lambda x, k: jnp.sum(conv_kernel.conv(x, k, padding) * g.astype(jnp.float32)),
                                      argnums=(0, 1)))(x, kernel)
    assert vjp_dx.dtype == vjp_dk.dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(vjp_dx), np.asarray(dx.astype(jnp.bfloat16)))
    np.testing.assert_array_equal(np.asarray(vjp_dk), np.asarray(dk.astype(jnp.bfloat16)))


@needs_kernel
def test_on_spikes_it_is_the_f32_convolution_of_the_rounded_weights():
    """Spikes are exact in bf16 and so is each product: only the f32 sums' order may differ from XLA's f32 conv."""
    rng = np.random.default_rng(2)
    spikes = (rng.random((4, 8, 8, 32)) < 0.3).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 32, 64)).astype(np.float32)
    rounded = np.asarray(jnp.asarray(kernel, jnp.bfloat16).astype(jnp.float32))
    f32 = jax.lax.conv_general_dilated(spikes, rounded, (1, 1), [(1, 1), (1, 1)], dimension_numbers=conv._DIMS,
                                       precision="highest")
    amx = conv_kernel.conv(jnp.asarray(spikes, jnp.bfloat16), jnp.asarray(kernel, jnp.bfloat16), 1)
    assert_close(amx, np.asarray(f32, np.float64), rtol=1e-6)


_BITS = """
import hashlib
import jax, jax.numpy as jnp, numpy as np
from jsnn import conv_kernel
rng = np.random.default_rng(3)
x = jnp.asarray(rng.standard_normal((3, 16, 16, 64)), jnp.bfloat16)
w = jnp.asarray(rng.standard_normal((3, 3, 64, 64)), jnp.bfloat16)
g = jnp.asarray(rng.standard_normal((3, 16, 16, 64)), jnp.float32)
assert conv_kernel.unavailable() is None
f = lambda x, k: jnp.sum(conv_kernel.conv(x, k, 1) * g)
out = [conv_kernel.conv(x, w, 1), *jax.grad(f, argnums=(0, 1))(x, w),
       *conv_kernel._call("backward", [x.shape, w.shape], x, w, g.astype(jnp.bfloat16), pad=1)]
print(len(os.sched_getaffinity(0)), hashlib.sha256(b"".join(np.asarray(a).tobytes() for a in out)).hexdigest())
"""


@needs_kernel
@pytest.mark.skipif(not CAN_PIN_TWO_CPUS, reason="needs two CPUs to pin a process to one of them")
def test_results_do_not_depend_on_the_thread_count():
    """The kernels split their work over XLA's own thread pool, sized by the CPUs the process may use: pinned to
    one CPU and on two, the same bits (forward, both gradients through the VJP, the backward call's f32 ones)."""
    one, two = (out.split() for out in output_on_one_and_two_cpus(_BITS))
    assert (one[0], two[0]) == ("1", "2") and one[1] == two[1]


def _custom_call_targets(fn, *args):
    text = jax.jit(fn).lower(*args).as_text()
    return {t for t in conv_kernel.TARGETS.values() if t in text}


@needs_kernel
def test_conv2d_takes_the_kernel_only_for_bf16_shapes_it_supports():
    x = jnp.ones((2, 8, 8, 32))
    kernel = jnp.ones((3, 3, 32, 64))

    def grad_of(precision, stride=1, impl=None):
        def loss(a, k):  # squared: the gradient needs the forward's output too
            return jnp.sum(conv.conv2d(a, k, stride, 1, impl=impl, precision=precision) ** 2)

        return lambda a, k: jax.grad(loss, argnums=(0, 1))(a, k)

    assert _custom_call_targets(grad_of("bf16"), x, kernel) == {conv_kernel.TARGETS[t] for t in ("forward", "backward")}
    assert not _custom_call_targets(grad_of("f32"), x, kernel)
    assert not _custom_call_targets(grad_of("bf16", stride=2), x, kernel)
    assert not _custom_call_targets(grad_of("bf16", impl="xla"), x, kernel)
    assert not _custom_call_targets(grad_of("bf16"), jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 64)))  # Cin 3
    # channels padded to the tiles' multiple of 32 at most doubles the products: 16 -> 32 runs, 16 -> 16 does not
    assert _custom_call_targets(grad_of("bf16"), jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 32)))
    assert not _custom_call_targets(grad_of("bf16"), jnp.ones((2, 8, 8, 16)), jnp.ones((3, 3, 16, 16)))
    # maps of at most IM2COL_MAX_OUTPUT_PIXELS pixels keep the im2col matmul; 4x4 maps take the kernel
    assert not _custom_call_targets(grad_of("bf16"), jnp.ones((2, 2, 2, 32)), kernel)
    assert _custom_call_targets(grad_of("bf16"), jnp.ones((2, 4, 4, 256)), jnp.ones((3, 3, 256, 64)))
    # non-square kernels stay XLA's: the kernel's input gradient pads both axes alike
    assert not conv_kernel.supports((2, 8, 8, 32), (3, 1, 32, 64), 1, 0)
    assert conv_kernel.supports((2, 8, 8, 32), (3, 3, 32, 64), 1, 0)


@needs_kernel
def test_conv2d_bf16_agrees_with_xlas_bf16_convolution():
    x, kernel = _bf16_operands((2, 8, 8, 32, 64, 3, 1), seed=5)
    x, kernel = x.astype(jnp.float32), kernel.astype(jnp.float32)
    amx = conv.conv2d(x, kernel, 1, 1, precision="bf16")
    xla = conv.conv2d(x, kernel, 1, 1, impl="xla", precision="bf16")
    assert_close(amx, np.asarray(xla, np.float64), rtol=1e-5)


def _bf16_conv_targets():
    x, kernel = jnp.ones((2, 8, 8, 32)), jnp.ones((3, 3, 32, 64))
    return _custom_call_targets(lambda a, k: conv.conv2d(a, k, 1, 1, precision="bf16"), x, kernel)


def test_switched_off_by_the_environment(monkeypatch):
    """JSNN_CONV_AMX=0: bf16 convolutions are XLA's (runs on every CPU)."""
    monkeypatch.setenv("JSNN_CONV_AMX", "0")
    conv_kernel._load.cache_clear()
    try:
        assert conv_kernel.unavailable() == "JSNN_CONV_AMX=0"
        assert not _bf16_conv_targets()
    finally:
        monkeypatch.delenv("JSNN_CONV_AMX")
        conv_kernel._load.cache_clear()


def test_fallback_without_bf16_products_or_without_a_compiler(monkeypatch, caplog):
    """A CPU with neither AMX nor AVX512-BF16 keeps XLA's convolutions and says nothing; one with either whose
    kernel cannot be built says why in one log line, and keeps them too (runs on every CPU)."""
    try:
        monkeypatch.setattr(conv_kernel, "cpu_has_amx", lambda: False)
        monkeypatch.setattr(conv_kernel, "cpu_has_avx512_bf16", lambda: False)
        conv_kernel._load.cache_clear()
        with caplog.at_level("WARNING", logger="jsnn.conv_kernel"):
            assert conv_kernel.unavailable() == "this CPU has neither AMX-BF16 nor AVX512-BF16"
            assert not _bf16_conv_targets()
        assert not caplog.records

        def no_compiler(*args, **kwargs):
            raise native.CompilerMissing("the bf16 convolution kernel needs a C++ compiler: none was found")

        monkeypatch.setattr(conv_kernel, "build", no_compiler)
        for amx, variant in ((True, "amx"), (False, "avx512_bf16")):
            monkeypatch.setattr(conv_kernel, "cpu_has_amx", lambda: amx)
            monkeypatch.setattr(conv_kernel, "cpu_has_avx512_bf16", lambda: True)
            conv_kernel._load.cache_clear()
            caplog.clear()
            with caplog.at_level("WARNING", logger="jsnn.conv_kernel"):
                assert "needs a C++ compiler" in conv_kernel.unavailable() and not _bf16_conv_targets()
            assert [r.getMessage() for r in caplog.records] == [
                f"bf16 convolutions run as XLA's, not on jsnn's {variant} kernel: "
                "the bf16 convolution kernel needs a C++ compiler: none was found"]
    finally:
        monkeypatch.undo()
        conv_kernel._load.cache_clear()


@needs_kernel
def test_calls_from_several_threads_at_once_equal_calls_one_at_a_time():
    """The worker pool serves one call at a time; a call that finds it busy runs alone (same sums, same order)."""
    from concurrent.futures import ThreadPoolExecutor

    x, kernel = _bf16_operands((4, 16, 16, 32, 64, 3, 1), seed=6)
    g = jnp.asarray(np.random.default_rng(7).standard_normal((4, 16, 16, 64)), jnp.bfloat16)
    fwd = jax.jit(lambda x, k: conv_kernel.conv(x, k, 1))
    bwd = jax.jit(lambda x, k, g: conv_kernel._call("backward", [x.shape, k.shape], x, k, g, pad=1))

    def call(i):  # forward and backward calls alternate
        return [np.asarray(fwd(x, kernel))] if i % 2 == 0 else [np.asarray(a) for a in bwd(x, kernel, g)]

    expected = [call(0), call(1)]
    with ThreadPoolExecutor(4) as threads:
        results = list(threads.map(call, range(16)))
    for i, r in enumerate(results):
        for got, want in zip(r, expected[i % 2], strict=True):
            np.testing.assert_array_equal(got, want)


@needs_kernel
def test_step_peak_counts_the_kernels_products_as_xla_counts_the_convolutions():
    """benchmarks/step_peak.py adds the kernel calls' products, which XLA's cost analysis does not see, so a
    bf16 step (its convolutions on the kernel) counts the work XLA counts for the same f32 step."""
    from benchmarks.step_peak import compiled_step

    def counted(precision):
        compiled, _, _, kernel_flops = compiled_step("digits_cnn", precision, 2, 2, (8, 8, 1), 10)
        cost = compiled.cost_analysis()
        return float((cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]), kernel_flops

    f32_xla, f32_kernel = counted("f32")
    bf16_xla, bf16_kernel = counted("bf16")
    assert f32_kernel == 0 and bf16_kernel > 0.5 * f32_xla  # the two inner convolutions: most of the work
    np.testing.assert_allclose(bf16_xla + bf16_kernel, f32_xla, rtol=0.02)


@needs_kernel
def test_over_two_devices_the_kernel_runs_on_each_devices_images():
    """The programs' bf16 train step on a 2-device mesh (tests/scripts/multidevice_amx_conv.py): the kernel runs
    inside each device's part of the step on its half of the images, and two steps end within bf16 rounding of
    one device's (not bit for bit: a sum's order moves an f32 gradient, which can move a bf16 rounding)."""
    result = two_device_script("multidevice_amx_conv.py")
    assert result["kernel_batches"] == {"2": [32], "1": [64]}  # T = 4 x 8 images a device, x 16 on one
    assert result["two_devices_vs_one"] < 5e-3


@needs_kernel
@pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")
def test_a_forked_child_computes_without_its_parents_threads():
    """fork copies no threads: a child that calls the kernel after its parent's calls must not wait for helpers
    that never start (the caller does the work no helper took)."""
    import signal
    import time

    x, kernel = _bf16_operands((4, 16, 16, 32, 64, 3, 1), seed=8)
    expected = np.asarray(conv_kernel.conv(x, kernel, 1))  # the parent's pool now runs
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: compute, report whether it matches, exit without running the parent's cleanup
        try:
            same = np.array_equal(np.asarray(conv_kernel.conv(x, kernel, 1)), expected)
            os.write(write, b"1" if same else b"0")
        finally:
            os._exit(0)
    os.close(write)
    deadline = time.monotonic() + 120  # a child waiting for workers it does not have never ends: fail, not hang
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if done[0] == 0:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child's kernel call did not return")
    assert os.read(read, 1) == b"1" and os.WEXITSTATUS(done[1]) == 0


@pytest.mark.parametrize("variant, cpu", [("amx", "sapphirerapids"), ("avx512_bf16", "cooperlake")])
def test_each_build_compiles_for_a_cpu_that_has_it(variant, cpu, tmp_path):
    """A machine runs one build: the other is compiled here (not run) for a CPU that has it, so an edit that
    breaks the build this machine does not run fails on it too (x86 with a C++ compiler)."""
    import platform
    import shutil

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 builds")
    try:
        cxx = native.find_compiler()
    except native.CompilerMissing as e:
        pytest.skip(str(e))
    flags = [f"-march={cpu}" if f == "-march=native" else f for f in conv_kernel.FLAGS[variant]]
    source = tmp_path / "kernel.cc"
    source.write_text(conv_kernel.SOURCE)
    out = subprocess.run([*cxx, *flags, f"-I{jax.ffi.include_dir()}", str(source), "-o", str(tmp_path / "k.so")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    if shutil.which("nm"):  # the symbols the loader registers (not loaded: it may hold instructions this CPU lacks)
        symbols = subprocess.run(["nm", "-D", str(tmp_path / "k.so")], capture_output=True, text=True).stdout
        assert all(s in symbols for s in ("JsnnAmxConvForward", "JsnnAmxConvBackward", "jsnn_amx_ready"))
