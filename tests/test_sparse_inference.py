"""The event-driven spike conv (jsnn/sparse_inference) against the dense conv, and a ticket's predictions."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import native
from jsnn.models import get_model
from jsnn.sparse_inference import kernel, predict_sparse, sparse_layers
from jsnn.variables import Variables, apply_model, init_variables, map_with_names


def _lax_conv(x, w, stride, pad):  # the independent reference: XLA's convolution, straight
    return jax.lax.conv_general_dilated(jnp.asarray(x), jnp.asarray(w), (stride, stride), [(pad, pad)] * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _close(out, ref):
    out, ref = np.asarray(out), np.asarray(ref)
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) <= 1e-5 * max(1.0, np.max(np.abs(ref)))


@pytest.mark.parametrize("k,stride,cin,cout,hw", [(3, 1, 5, 20, 7), (3, 1, 16, 144, 4), (1, 2, 6, 33, 6),
                                                  (3, 2, 4, 16, 5)])
@pytest.mark.parametrize("fmt", ["dense", "ell"])
def test_spike_conv_equals_dense_conv(k, stride, cin, cout, hw, fmt):
    rng = np.random.default_rng(k * 100 + cout)
    x = (rng.random((3, hw, hw, cin)) < 0.3).astype(np.float32)
    x[0, 0, 0] *= 2.5  # a non-binary value is multiplied, not just counted
    w = (rng.standard_normal((k, k, cin, cout)) * (rng.random((k, k, cin, cout)) < 0.4)).astype(np.float32)
    w[:, :, 1] = 0  # a fully pruned input channel: an empty row
    arg = w if fmt == "dense" else (w.shape, *kernel.ell_rows(w))
    out = jax.jit(lambda x: kernel.spike_conv(x, arg, stride, k // 2, fmt, threads=2))(x)
    _close(out, _lax_conv(x, w, stride, k // 2))


def test_ell_rows_hold_exactly_the_kept_weights():
    w = np.zeros((1, 1, 3, 4), np.float32)
    w[0, 0, 0, [1, 3]] = [2.0, -1.0]
    w[0, 0, 2, 0] = 5.0
    idx, val = kernel.ell_rows(w)
    assert idx.shape == val.shape == (3, 2)
    assert idx[0].tolist() == [1, 3] and val[0].tolist() == [2.0, -1.0]
    assert idx[1].tolist() == [4, 5] and val[1].tolist() == [0.0, 0.0]  # padding: spare slots cout + q
    assert idx[2].tolist() == [0, 5] and val[2].tolist() == [5.0, 0.0]


def test_ticket_predictions_equal_the_dense_path():
    model = get_model("digits_cnn", 10, timesteps=3)
    v = init_variables(model, jax.random.PRNGKey(0), (1, 8, 8, 1))
    rng = np.random.default_rng(0)
    # a ticket: conv1 98 % sparse (ELL rows), conv2 50 % (full rows); BN scales up so that neurons fire
    masks = map_with_names(lambda n, m: m * (rng.random(m.shape) >= {"conv1": 0.98, "conv2": 0.5}.get(n, 0.0)),
                           v.masks)
    bn = jax.tree_util.tree_map(lambda a: a * 3.0, v.bn)
    ticket = Variables(v.weights, masks, bn, v.batch_stats)
    images = jnp.asarray(rng.random((16, 8, 8, 1), dtype=np.float32))
    layers = sparse_layers(ticket)
    assert layers["conv1"][0] == "ell" and layers["conv2"][0] == "dense"
    ref, _, stats = apply_model(model, ticket, images, train=False, collect_stats=True)
    assert float(stats["conv1"]["input_sum"].sum()) > 0 and float(stats["conv2"]["input_sum"].sum()) > 0
    out = jax.jit(lambda im: predict_sparse(model, ticket, im, layers))(images)
    _close(out, ref)
    assert np.array_equal(np.argmax(np.asarray(out).mean(0), -1), np.argmax(np.asarray(ref).mean(0), -1))


def test_no_compiler_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-jsnn")
    with pytest.raises(kernel.CompilerMissing, match="needs a C.. compiler"):
        kernel.build(str(tmp_path))


def test_without_a_system_compiler_pypi_zig_is_used(monkeypatch):
    """No $CXX and no g++/c++/clang++ on PATH: the zig toolchain of the `sparse` extra (installed with `test`)."""
    import sys

    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    assert native.find_compiler() == [sys.executable, "-m", "ziglang", "c++"]
