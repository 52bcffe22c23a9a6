"""conv2d's implementations agree with jax.lax.conv_general_dilated: forward and both gradients."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import conv
from jsnn.conv import conv2d
from jsnn.models import get_model
from jsnn.variables import apply_model, init_variables
from tests import small_data


def reference(x, kernel, stride, padding):
    """lax's convolution at the precision conv2d's f32 uses on every backend (jsnn/precision.py): without it a
    GPU would compare its TF32 reference with jsnn's f32."""
    return jax.lax.conv_general_dilated(
        x, kernel, (stride, stride), [(padding, padding)] * 2, dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )


# stride, kernel, padding, (H, W); odd and even sizes matter for stride 2 only
CASES = [(s, k, p, hw) for s, k, p in itertools.product([1, 2], [1, 3], [0, 1])
         for hw in ([(7, 7), (8, 6)] if s == 2 else [(7, 7)])]


@pytest.fixture(params=["vjp", "im2col"])
def custom_path(request, monkeypatch):
    """Forces each of "custom"'s two paths: the hand-written VJP, or the small-map im2col matmul."""
    monkeypatch.setattr(conv, "IM2COL_MAX_OUTPUT_PIXELS", 0 if request.param == "vjp" else 10**9)
    return request.param


@pytest.mark.parametrize("impl", ["custom", "tuned"])
@pytest.mark.parametrize("stride,k,padding,hw", CASES)
def test_custom_vjp_matches_lax(stride, k, padding, hw, custom_path, impl):
    """Each non-XLA path (hand-written VJP, im2col matmul; "tuned" picks per shape) equals lax's conv."""
    kx, kk, kg = jax.random.split(jax.random.PRNGKey(stride * 100 + k * 10 + padding), 3)
    x = small_data.normal(kx, (3, *hw, 5))
    kernel = small_data.normal(kk, (k, k, 5, 4))
    ref_out, ref_vjp = jax.vjp(lambda a, b: reference(a, b, stride, padding), x, kernel)
    out, vjp = jax.jit(lambda a, b: jax.vjp(lambda a, b: conv2d(a, b, stride, padding, impl=impl), a, b))(x, kernel)
    assert out.shape == ref_out.shape
    np.testing.assert_allclose(out, ref_out, rtol=1e-5, atol=1e-5)
    g = small_data.normal(kg, out.shape)
    for got, want in zip(vjp(g), ref_vjp(g)):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cin", [4, 200])  # both filter-gradient paths: im2col (thin) and per tap (wide)
def test_filter_grad_paths_match_lax(cin):
    kx, kk = jax.random.split(jax.random.PRNGKey(cin))
    x = (small_data.uniform(kx, (2, 6, 6, cin)) < 0.3).astype(jnp.float32)  # spikes, as most layers see
    kernel = small_data.normal(kk, (3, 3, cin, 3))
    loss = lambda impl: (lambda a, b: jnp.sum(jnp.sin(conv2d(a, b, 1, 1, impl=impl))))
    want = jax.grad(loss("xla"), argnums=(0, 1))(x, kernel)
    got = jax.jit(jax.grad(loss("custom"), argnums=(0, 1)))(x, kernel)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_second_order_through_custom_vjp():
    """grad of a function of a gradient (grad inside grad) goes through the custom VJP too."""
    x = small_data.normal(jax.random.PRNGKey(0), (2, 5, 5, 3))
    kernel = small_data.normal(jax.random.PRNGKey(1), (3, 3, 3, 2))

    def inner(impl):
        return lambda k: jnp.sum(jax.grad(lambda k: jnp.sum(conv2d(x, k, 1, 1, impl=impl) ** 3))(k) ** 2)

    np.testing.assert_allclose(jax.grad(inner("custom"))(kernel), jax.grad(inner("xla"))(kernel), rtol=1e-4, atol=1e-3)


def test_whole_model_gradients_match_xla():
    """jax.grad of a whole Res-SNN (stride 1 and 2, 1x1 shortcuts) is the same with either implementation."""
    from jsnn.neuron import LIFConfig

    model = get_model("resnet19", 10, timesteps=2, lif=LIFConfig(surrogate="rectangle"),
                      stage_features=(16,), stage_blocks=(1,), stem_features=8, hidden_features=16)
    images = small_data.normal(jax.random.PRNGKey(3), (2, 8, 8, 3))
    variables = init_variables(model, jax.random.PRNGKey(4), images.shape)

    def loss(weights, impl):
        conv.set_conv_impl(impl)
        try:
            logits, _, _ = apply_model(model, variables._replace(weights=weights), images, train=True)
        finally:
            conv.set_conv_impl(None)
        return jnp.mean(logits ** 2)

    want = jax.jit(jax.grad(lambda w: loss(w, "xla")))(variables.weights)
    for impl in ("custom", "tuned"):
        got = jax.jit(jax.grad(lambda w: loss(w, impl)))(variables.weights)
        jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4), got, want)


def test_impl_selection(monkeypatch):
    assert conv.default_impl("cpu") == "tuned"
    assert conv.default_impl("gpu") == "xla"
    monkeypatch.setenv("JSNN_CONV_IMPL", "xla")
    assert conv.default_impl("cpu") == "xla"
    conv.set_conv_impl("custom")
    try:
        assert conv.default_impl("gpu") == "custom"
    finally:
        conv.set_conv_impl(None)
    with pytest.raises(ValueError, match="unknown conv implementation"):
        conv2d(jnp.zeros((1, 3, 3, 1)), jnp.zeros((1, 1, 1, 1)), 1, 0, impl="fast")


def test_tuned_routes_each_shape():
    """"tuned" uses XLA's conv for ordinary 3x3 maps, the hand-written VJP for 1x1 kernels
    and one matmul for tiny output maps: read off the jaxprs."""
    def jaxpr(x_shape, k_shape, stride, padding):
        x, k = jnp.zeros(x_shape), jnp.zeros(k_shape)
        return str(jax.make_jaxpr(lambda a, b: conv2d(a, b, stride, padding, impl="tuned"))(x, k))

    assert "conv_general_dilated" in jaxpr((2, 8, 8, 3), (3, 3, 3, 4), 1, 1)
    assert "custom_vjp_call" in jaxpr((2, 8, 8, 3), (1, 1, 3, 4), 2, 0)
    tiny = jaxpr((2, 2, 2, 3), (3, 3, 3, 4), 1, 1)
    assert "dot_general" in tiny and "conv_general_dilated" not in tiny


def test_flat_draws_equal_shaped_draws():
    """The tests' random inputs (tests/small_data.py) are jax.random's draws of the same shape, bit for bit."""
    key, shape = jax.random.PRNGKey(11), (5, 3)
    for ours, theirs in ((small_data.normal(key, shape), jax.random.normal(key, shape)),
                         (small_data.uniform(key, shape, minval=-2.0, maxval=0.5),
                          jax.random.uniform(key, shape, minval=-2.0, maxval=0.5)),
                         (small_data.bernoulli(key, 0.3, shape), jax.random.bernoulli(key, 0.3, shape))):
        assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
        assert np.asarray(ours).tobytes() == np.asarray(theirs).tobytes()
