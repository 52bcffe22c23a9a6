"""jsnn.event_conv: the event-driven forward pass and filter gradient of a convolution of spikes, against a
float64 NumPy reference, and conv.conv2d's use of them (the VJP, the density rule, the fallback)."""
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import conv, conv_kernel, event_conv, native
from tests.programs import CAN_PIN_TWO_CPUS, output_on_one_and_two_cpus, two_device_script
from tests.reference import assert_close, conv_reference, conv_reference_grads

needs_kernel = pytest.mark.skipif(event_conv.unavailable() is not None,
                                  reason=f"event-driven convolution unavailable: {event_conv.unavailable()}")

# (N, H, W, Cin, Cout, k, padding): channel counts below, at and past the kernels' 16-float vectors and their
# 16 / 32 / 64 / 128-wide output blocks (20, 50, 96, 200 outputs leave a partial last block), 1x1, 3x3 and 5x5
# kernels, padding 0 up to k - 1, odd and non-square maps, a 1x1 map
SHAPES = [(2, 8, 8, 32, 64, 3, 1), (3, 5, 7, 64, 32, 3, 1), (2, 6, 6, 32, 96, 1, 0), (1, 9, 9, 16, 64, 5, 2),
          (2, 8, 8, 32, 32, 3, 0), (1, 3, 4, 64, 64, 3, 2), (5, 2, 2, 3, 16, 3, 1), (2, 8, 8, 16, 200, 3, 1),
          (3, 5, 7, 48, 20, 3, 1), (1, 9, 9, 40, 50, 5, 4), (4, 1, 1, 7, 130, 3, 1)]


def _spikes(shape, density, seed=0, values=(1.0,)):
    """[N, H, W, C] with a fraction ``density`` of nonzeros drawn from ``values``."""
    rng = np.random.default_rng(seed)
    fire = rng.random(shape) < density
    return jnp.asarray(np.where(fire, rng.choice(np.asarray(values, np.float32), shape), 0.0).astype(np.float32))


def _operands(shape, density, seed=0, values=(1.0,)):
    n, h, w, cin, cout, k, _ = shape
    x = _spikes((n, h, w, cin), density, seed, values)
    kernel = jnp.asarray(np.random.default_rng(seed + 1).standard_normal((k, k, cin, cout)), jnp.float32)
    return x, kernel


@needs_kernel
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("density", [0.0, 0.15, 1.0])
def test_forward_and_filter_gradient_equal_the_float64_reference(shape, density):
    x, kernel = _operands(shape, density)
    padding = shape[-1]
    out = jax.jit(event_conv.forward, static_argnums=2)(x, kernel, padding)
    assert out.shape == conv_reference(x, kernel, padding).shape
    if density == 0.0:  # no event: exactly zero, not "close"
        assert not np.any(np.asarray(out)) and not np.any(np.asarray(
            event_conv.filter_grad(x, jnp.ones(out.shape), kernel.shape, padding)))
        return
    assert_close(out, conv_reference(x, kernel, padding))
    g = jnp.asarray(np.random.default_rng(2).standard_normal(out.shape), jnp.float32)
    _, dk_ref = conv_reference_grads(x, kernel, padding, g)
    dk = jax.jit(event_conv.filter_grad, static_argnums=(2, 3))(x, g, kernel.shape, padding)
    assert_close(dk, dk_ref)


@needs_kernel
def test_any_nonzero_value_multiplies_its_weights():
    """Not only spikes: a sum of spikes (SEW's ADD), negative and fractional values compute the same sums."""
    shape = (3, 6, 5, 24, 40, 3, 1)
    x, kernel = _operands(shape, 0.3, seed=5, values=(1.0, 2.0, -0.5, 0.37))
    out = event_conv.forward(x, kernel, 1)
    assert_close(out, conv_reference(x, kernel, 1), rtol=4e-6)  # products no longer exact: both roundings
    g = jnp.asarray(np.random.default_rng(6).standard_normal(out.shape), jnp.float32)
    assert_close(event_conv.filter_grad(x, g, kernel.shape, 1), conv_reference_grads(x, kernel, 1, g)[1], rtol=4e-6)


_BITS = """
import hashlib
import jax, jax.numpy as jnp, numpy as np
from jsnn import event_conv
rng = np.random.default_rng(3)
x = jnp.asarray((rng.random((7, 9, 9, 32)) < 0.2).astype(np.float32))
w = jnp.asarray(rng.standard_normal((3, 3, 32, 48)), jnp.float32)
g = jnp.asarray(rng.standard_normal((7, 9, 9, 48)), jnp.float32)
assert event_conv.unavailable() is None
out = [np.asarray(event_conv.forward(x, w, 1)), np.asarray(event_conv.filter_grad(x, g, w.shape, 1))]
print(len(os.sched_getaffinity(0)), hashlib.sha256(b"".join(a.tobytes() for a in out)).hexdigest())
"""


@needs_kernel
@pytest.mark.skipif(not CAN_PIN_TWO_CPUS, reason="needs two CPUs to pin a process to one of them")
def test_results_do_not_depend_on_the_thread_count():
    """The kernels split their work over XLA's own thread pool, sized by the CPUs the process may use: pinned to
    one CPU and on two, the same bits."""
    one, two = (out.split() for out in output_on_one_and_two_cpus(_BITS))
    assert (one[0], two[0]) == ("1", "2") and one[1] == two[1]


def _custom_call_targets(fn, *args):
    text = jax.jit(fn).lower(*args).as_text()
    return {key for key, target in event_conv.TARGETS.items() if target in text}


def _loss(impl=None, input_is_spikes=True, stride=1):
    def loss(x, k):  # squared: the gradient needs the forward's output too
        return jnp.sum(conv.conv2d(x, k, stride, 1, impl=impl, input_is_spikes=input_is_spikes) ** 2)
    return loss


needs_bf16_kernel = pytest.mark.skipif(conv_kernel.unavailable() is not None,
                                       reason=f"bf16 convolution kernel unavailable: {conv_kernel.unavailable()}")


@needs_kernel
def test_conv2d_runs_event_driven_only_for_spikes_under_the_cpu_paths():
    x, kernel = jnp.ones((2, 8, 8, 32)), jnp.ones((3, 3, 32, 64))
    grad = lambda loss: jax.grad(loss, argnums=(0, 1))  # noqa: E731
    assert _custom_call_targets(grad(_loss()), x, kernel) == {"forward", "filter_grad"}
    assert _custom_call_targets(grad(_loss(impl="custom")), x, kernel) == {"forward", "filter_grad"}
    assert not _custom_call_targets(grad(_loss(input_is_spikes=False)), x, kernel)
    assert not _custom_call_targets(grad(_loss(impl="xla")), x, kernel)
    assert not _custom_call_targets(grad(_loss(stride=2)), x, kernel)
    assert not _custom_call_targets(grad(_loss()), jnp.ones((2, 2, 2, 32)), kernel)  # the tiny-map im2col
    # bf16: the forward pass beside jsnn's bf16 kernel where that runs (its backward call stays), else XLA's
    bf16 = lambda x, k: jnp.sum(conv.conv2d(x, k, 1, 1, precision="bf16", input_is_spikes=True) ** 2)  # noqa: E731
    expected = {"forward"} if conv_kernel.unavailable() is None else set()
    assert _custom_call_targets(grad(bf16), x, kernel) == expected


@needs_kernel
@needs_bf16_kernel
@pytest.mark.parametrize("density", [0.1, 0.6])  # the event-driven forward pass; the bf16 kernel's
def test_bf16_spikes_compute_the_bf16_kernels_values_and_gradients(density):
    """Under bf16 the event-driven forward pass adds the bf16-rounded weights' rows in f32: the bf16 convolution's
    products, summed in another order; the gradients are the bf16 kernel's own, bit for bit."""
    shape = (4, 8, 8, 32, 48, 3, 1)
    x, kernel = _operands(shape, density, seed=3)
    g = jnp.asarray(np.random.default_rng(4).standard_normal((4, 8, 8, 48)), jnp.float32)
    out, vjp = jax.vjp(lambda a, k: conv.conv2d(a, k, 1, 1, precision="bf16", input_is_spikes=True), x, kernel)
    dense_out, dense_vjp = jax.vjp(lambda a, k: conv.conv2d(a, k, 1, 1, precision="bf16"), x, kernel)
    rounded = np.asarray(kernel.astype(jnp.bfloat16).astype(jnp.float32))
    assert_close(out, conv_reference(x, rounded, 1))
    assert_close(dense_out, conv_reference(x, rounded, 1))
    for ours, theirs in zip(vjp(g), dense_vjp(g)):
        assert ours.dtype == theirs.dtype == jnp.float32
        np.testing.assert_array_equal(ours, theirs)


@needs_kernel
@needs_bf16_kernel
def test_bf16_density_rule_picks_the_forward_kernel_below_its_threshold(monkeypatch):
    shape = (2, 10, 10, 32, 32, 3, 1)
    monkeypatch.setattr(event_conv, "forward", lambda x, k, p: jnp.full(
        (x.shape[0], x.shape[1] + 2 * p - k.shape[0] + 1, x.shape[2] + 2 * p - k.shape[1] + 1, k.shape[3]), 7.0))
    for density in (event_conv.BF16_FORWARD_MAX_DENSITY - 0.1, event_conv.BF16_FORWARD_MAX_DENSITY + 0.1):
        x, kernel = _operands(shape, density, seed=12)
        out = conv.conv2d(x, kernel, 1, 1, precision="bf16", input_is_spikes=True)
        assert bool(np.all(np.asarray(out) == 7.0)) == (float(jnp.mean(x != 0)) <= event_conv.BF16_FORWARD_MAX_DENSITY)


@needs_kernel
@pytest.mark.parametrize("density", [0.1, 0.45, 0.9])  # both kernels; the forward's only; neither (XLA's)
def test_conv2d_values_and_gradients_on_either_side_of_the_density_rule(density):
    shape = (4, 8, 8, 32, 48, 3, 1)
    x, kernel = _operands(shape, density, seed=7)
    g = jnp.asarray(np.random.default_rng(8).standard_normal((4, 8, 8, 48)), jnp.float32)
    out, vjp = jax.vjp(lambda a, k: conv.conv2d(a, k, 1, 1, input_is_spikes=True), x, kernel)
    dx, dk = vjp(g)
    assert_close(out, conv_reference(x, kernel, 1))
    dx_ref, dk_ref = conv_reference_grads(x, kernel, 1, g)
    assert_close(dx, dx_ref)
    assert_close(dk, dk_ref)
    # the same values jitted, and XLA's input gradient exactly (the VJP hands it to XLA's own transpose rule)
    _, xla_vjp = jax.vjp(lambda a, k: conv.conv2d(a, k, 1, 1, impl="xla"), x, kernel)
    np.testing.assert_array_equal(jax.jit(lambda g: vjp(g)[0])(g), xla_vjp(g)[0])


@needs_kernel
def test_the_density_rule_picks_the_kernel_below_each_threshold(monkeypatch):
    """Which branch runs, read from the kernels' own results: a kernel swapped for a marker shows it ran."""
    shape = (2, 10, 10, 20, 16, 3, 1)
    monkeypatch.setattr(event_conv, "forward", lambda x, k, p: jnp.full(
        (x.shape[0], x.shape[1] + 2 * p - k.shape[0] + 1, x.shape[2] + 2 * p - k.shape[1] + 1, k.shape[3]), 7.0))
    monkeypatch.setattr(event_conv, "filter_grad", lambda x, g, shape, p: jnp.full(shape, 9.0))
    for density, forward_ran, filter_ran in [(0.2, True, True), (0.45, True, False), (0.7, False, False)]:
        x, kernel = _operands(shape, density, seed=11)
        measured = float(jnp.mean(x != 0))
        assert (measured <= event_conv.FORWARD_MAX_DENSITY, measured <= event_conv.FILTER_GRAD_MAX_DENSITY) == (
            forward_ran, filter_ran)
        out, vjp = jax.vjp(lambda a, k: conv.conv2d(a, k, 1, 1, input_is_spikes=True), x, kernel)
        assert bool(np.all(np.asarray(out) == 7.0)) == forward_ran
        assert bool(np.all(np.asarray(vjp(jnp.ones_like(out))[1]) == 9.0)) == filter_ran


def test_xla_filter_gradient_form_equals_xlas_transpose_rule():
    x, kernel = _operands((3, 7, 6, 16, 24, 3, 1), 0.5, seed=9)
    g = jnp.asarray(np.random.default_rng(10).standard_normal((3, 7, 6, 24)), jnp.float32)
    _, vjp = jax.vjp(lambda k: conv.conv2d(x, k, 1, 1, impl="xla"), kernel)
    np.testing.assert_allclose(conv._xla_filter_grad(x, g, 1), vjp(g)[0], rtol=1e-5, atol=1e-5)
    assert_close(conv._xla_filter_grad(x, g, 1), conv_reference_grads(x, kernel, 1, g)[1])


def test_switched_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("JSNN_EVENT_CONV", "0")
    event_conv._load.cache_clear()
    try:
        assert event_conv.unavailable() == "JSNN_EVENT_CONV=0"
        x, kernel = jnp.ones((2, 8, 8, 32)), jnp.ones((3, 3, 32, 64))
        assert not _custom_call_targets(jax.grad(_loss(), argnums=(0, 1)), x, kernel)
    finally:
        event_conv._load.cache_clear()


def test_without_a_compiler_one_line_and_xlas_convolution(monkeypatch, caplog):
    def no_compiler(*args, **kwargs):
        raise native.CompilerMissing("the event-driven training convolution needs a C++ compiler: none was found")

    monkeypatch.setattr(native, "build", no_compiler)
    event_conv._load.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="jsnn.event_conv"):
            assert "needs a C++ compiler" in event_conv.unavailable()
        assert [r.getMessage() for r in caplog.records] == [
            "spike-input convolutions run as XLA's, not event-driven: the event-driven training convolution needs "
            "a C++ compiler: none was found"]
        x, kernel = _operands((2, 8, 8, 32, 64, 3, 1), 0.2)
        assert not _custom_call_targets(jax.grad(_loss(), argnums=(0, 1)), x, kernel)
        assert_close(conv.conv2d(x, kernel, 1, 1, input_is_spikes=True), conv_reference(x, kernel, 1))
    finally:
        event_conv._load.cache_clear()


@needs_kernel
def test_over_two_devices_the_kernels_run_on_each_devices_images():
    """The programs' f32 train step on a 2-device mesh (tests/scripts/multidevice_event_conv.py): both kernels run
    inside each device's part of the step on its half of the images, and two steps end within f32 rounding of
    one device's (the filter gradient's sums are split between the devices)."""
    result = two_device_script("multidevice_event_conv.py")
    # T = 4 x 8 images a device, x 16 on one
    assert result["kernel_batches"] == {"forward/2": [32], "filter_grad/2": [32], "forward/1": [64],
                                        "filter_grad/1": [64]}
    assert result["two_devices_vs_one"] < 1e-5
