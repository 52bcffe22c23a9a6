"""Mixed precision (jsnn/precision.py): bf16 rounds only the weights on spike inputs, the policy per backend
is what the layers trace, and the setting reaches the config, its files and the programs' flags."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import conv, conv_kernel, precision
from jsnn.config import TrainConfig
from jsnn.conv import conv2d
from jsnn.layers import ConvBN, MaskedDense
from jsnn.precision import matmul
from jsnn.runs.workdir import run_signature
from tests import small_data


def bf16_round(w: np.ndarray) -> np.ndarray:
    """float32 -> the nearest bfloat16 (ties to even), as float32: NumPy bit arithmetic, not JAX's cast."""
    bits = np.asarray(w, np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def test_bf16_round_reference():
    """The NumPy rounding agrees with hand-picked cases: 1 + 2^-8 is a tie (rounds to even 1), 1 + 3*2^-9
    rounds up to 1 + 2^-7, and a bfloat16 value stays."""
    cases = np.array([1 + 2 ** -8, 1 + 3 * 2 ** -9, 1.5, -(1 + 2 ** -8 + 2 ** -20)], np.float32)
    np.testing.assert_array_equal(bf16_round(cases), np.array([1.0, 1 + 2 ** -7, 1.5, -(1 + 2 ** -7)], np.float32))


def spike_case(key, x_shape, w_shape):
    """Spikes (exactly 0/1) and weights whose bf16 roundings all lie in [2^-6, 8): every product and every
    partial sum is a multiple of 2^-13 below 2^10, exact in f32 in any summation order, so the layers can
    be compared with the NumPy reference bit for bit."""
    kx, kw = jax.random.split(key)
    x = np.asarray(small_data.bernoulli(kx, 0.3, x_shape), np.float32)
    w = np.asarray(small_data.normal(kw, w_shape), np.float32)
    w = np.sign(w) * np.clip(np.abs(w), 2 ** -6, 7.9)
    w = np.where(w == 0, 2 ** -6, w).astype(np.float32)
    return x, w


def numpy_conv(x, k, stride, padding):
    """NHWC x HWIO convolution as a float64 loop over the taps."""
    xp = np.pad(x.astype(np.float64), ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    kh, kw = k.shape[:2]
    ho = (xp.shape[1] - kh) // stride + 1
    wo = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], ho, wo, k.shape[3]))
    for i in range(kh):
        for j in range(kw):
            window = xp[:, i:i + stride * (ho - 1) + 1:stride, j:j + stride * (wo - 1) + 1:stride]
            out += np.einsum("nhwc,co->nhwo", window, k[i, j].astype(np.float64))
    return out


@pytest.mark.parametrize("impl,hw", [("xla", 5), ("custom", 5), ("tuned", 2)])  # 2x2 maps: the im2col matmul
def test_bf16_conv_on_spikes_rounds_only_the_weights(impl, hw):
    x, w = spike_case(jax.random.PRNGKey(hw), (3, hw, hw, 24), (3, 3, 24, 5))
    want = numpy_conv(x, bf16_round(w), 1, 1)
    assert not np.array_equal(bf16_round(w), w)  # the weights really are rounded
    got_bf16 = np.asarray(jax.jit(lambda a, b: conv2d(a, b, 1, 1, impl=impl, precision="bf16"))(x, w))
    got_f32 = np.asarray(jax.jit(lambda a, b: conv2d(a, b, 1, 1, impl=impl))(x, bf16_round(w)))
    assert got_bf16.dtype == np.float32
    np.testing.assert_array_equal(got_bf16, want)
    np.testing.assert_array_equal(got_f32, want)
    assert not np.array_equal(np.asarray(conv2d(x, w, 1, 1, impl=impl)), want)  # f32 on unrounded weights differs


def test_bf16_dense_on_spikes_rounds_only_the_weights():
    x, w = spike_case(jax.random.PRNGKey(7), (4, 6, 40), (40, 9))
    want = np.einsum("tbi,io->tbo", x.astype(np.float64), bf16_round(w).astype(np.float64))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a, b: matmul(a, b, "bf16"))(x, w)), want)
    np.testing.assert_array_equal(np.asarray(jax.jit(matmul)(x, bf16_round(w))), want)


def test_bf16_gradients_are_f32_and_near_the_f32_ones():
    """Parameters get f32 gradients; the bf16 layer's are the f32 layer's to bf16's rounding (the
    backward matmuls take bf16 operands and accumulate in f32): XLA's convolution, the hand-written
    VJP, the im2col matmul (2x2 map) and the dense matmul, all in one compiled function per precision."""
    x, w = spike_case(jax.random.PRNGKey(3), (4, 5, 5, 16), (3, 3, 16, 8))
    tiny = x[:, :2, :2]
    forms = (lambda a, b, p: conv2d(a, b, 1, 1, impl="tuned", precision=p),
             lambda a, b, p: conv2d(a, b, 1, 1, impl="custom", precision=p),
             lambda a, b, p: conv2d(a[:, :2, :2], b, 1, 1, impl="tuned", precision=p),
             lambda a, b, p: matmul(a.reshape(-1, 16), b[1, 1], p))

    def grads(p):
        def loss(a, b):
            return sum(jnp.sum(jnp.sin(f(a, b, p))) for f in forms)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(x, w)

    assert "dot_general" in str(jax.make_jaxpr(lambda a, b: conv2d(a, b, 1, 1, impl="tuned"))(tiny, w))
    for got, want in zip(grads("bf16"), grads("f32")):
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, want, rtol=0, atol=3e-2 * float(np.abs(want).max()))
        assert not np.array_equal(got, want)


def products(jaxpr):
    """(operand dtypes, precision) of every convolution / matmul in ``jaxpr`` and the jaxprs inside it,
    the AMX convolution kernel's calls (``jsnn.conv_kernel``; bf16 on a CPU that has AMX) included, with
    the default precision (its products are bf16 x bf16 -> f32)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
            found.append((tuple(str(v.aval.dtype) for v in eqn.invars), eqn.params["precision"]))
        if eqn.primitive.name == "ffi_call" and eqn.params["target_name"] == conv_kernel.TARGETS["forward"]:
            found.append((tuple(str(v.aval.dtype) for v in eqn.invars), None))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += products(inner)
    return found


def _products(layer, x, backend, monkeypatch):
    """``products`` of ``layer`` traced for a faked backend."""
    monkeypatch.setattr(precision.jax, "default_backend", lambda: backend)
    monkeypatch.setattr(conv.jax, "default_backend", lambda: backend)
    kwargs = {"train": False} if isinstance(layer, ConvBN) else {}
    variables = layer.init(jax.random.PRNGKey(0), x, **kwargs)
    return products(jax.make_jaxpr(lambda v: layer.apply(v, x, **kwargs))(variables).jaxpr)


@pytest.mark.parametrize("backend", ["cpu", "gpu", "cuda", "tpu", "METAL"])
def test_policy_per_backend_is_what_the_layers_trace(backend, monkeypatch):
    """f32: HIGHEST (no TF32 on a GPU, no single bf16 pass on a TPU, what the CPU computes anyway);
    tf32: HIGH; bf16: bf16 operands at the default precision. Traced with the backend faked."""
    P = jax.lax.Precision
    want = {"f32": (("float32", "float32"), (P.HIGHEST, P.HIGHEST)),
            "tf32": (("float32", "float32"), (P.HIGH, P.HIGH)),
            "bf16": (("bfloat16", "bfloat16"), None)}
    x = jnp.ones((2, 4, 4, 3))

    def normal(p):  # jax writes DEFAULT as None, one precision as a pair
        return None if p is None or p == (P.DEFAULT, P.DEFAULT) else p

    with jax.default_matmul_precision(None):  # jsnn's own choice (the test session pins JAX's default)
        for name, (dtypes, prec) in want.items():
            layers = [ConvBN(4, precision=name, input_is_spikes=False), MaskedDense(3, precision=name)]
            for layer, inp in zip(layers, (x, x.reshape(2, -1))):
                products = _products(layer, inp, backend, monkeypatch)
                assert products, f"no product traced in {type(layer).__name__}"
                for operand_dtypes, got in products:
                    assert operand_dtypes == dtypes and normal(got) == normal(prec), (name, backend, got)
            assert precision.matmul_policy(name, backend) == precision.POLICY[name][
                {"cuda": "gpu", "METAL": "other"}.get(backend, backend)]


def test_f32_follows_the_users_jax_default_precision(monkeypatch):
    """A user who sets JAX's own default (here TF32) gets it for f32; unset, f32 asks for HIGHEST."""
    P = jax.lax.Precision
    x = jnp.ones((2, 4, 4, 3))
    with jax.default_matmul_precision("tensorfloat32"):
        assert precision.matmul_policy("f32", "gpu").precision is None
        assert {p for _, p in _products(ConvBN(4, input_is_spikes=False), x, "gpu", monkeypatch)} == {(P.HIGH, P.HIGH)}
    with jax.default_matmul_precision(None):
        assert precision.matmul_policy("f32", "gpu").precision == P.HIGHEST


def test_precision_setting_reaches_config_files_and_flags():
    import argparse
    import os
    import sys

    # the programs import their shared flags as `flags` (and flags imports `starting`) from train/
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train"))
    from flags import add_training_flags

    assert "precision" not in TrainConfig().to_dict()  # f32 runs' files are what they were
    bf16 = TrainConfig(precision="bf16")
    assert bf16.to_dict()["precision"] == "bf16" and run_signature("dense", bf16)["precision"] == "bf16"
    assert TrainConfig.from_dict(bf16.to_dict()).precision == "bf16"
    with pytest.raises(ValueError, match="--precision must be one of f32, tf32, bf16"):
        dataclasses.replace(TrainConfig(precision="fp8"), epochs=1, batch_size=1, timesteps=1, lr=0.1).validate()
    parser = argparse.ArgumentParser()
    add_training_flags(parser)
    assert parser.parse_args(["--precision", "bf16"]).precision == "bf16"
    assert parser.parse_args([]).precision == "f32"
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp16"])


def test_models_pass_the_precision_to_every_layer_and_the_cost_report_counts_in_f32(digits_imp):
    """build_model gives every conv and linear of the run's network its precision; the cost report
    (jsnn.efficiency.measure) of a bf16 network is the f32 network's."""
    from jsnn.efficiency import measure
    from jsnn.models import build_model
    from jsnn.variables import apply_model, init_variables

    _, config, _, _ = digits_imp
    f32, bf16 = (build_model(dataclasses.replace(config, precision=p), 10) for p in ("f32", "bf16"))
    images = np.asarray(small_data.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1)))
    variables = init_variables(f32, jax.random.PRNGKey(0), images.shape)
    found = products(jax.make_jaxpr(lambda v: apply_model(bf16, v, images, train=False))(variables).jaxpr)
    n_layers = sum(layer.kind in ("conv", "linear") for layer in bf16.layers((8, 8, 1)))
    assert len(found) == n_layers and all(dtypes == ("bfloat16", "bfloat16") for dtypes, _ in found)
    a, b = (measure(m, variables, images, batch_size=3) for m in (f32, bf16))
    for key in ("synops_per_image", "activation_sparsity", "firing_rate"):
        assert a[key] == b[key]


def test_compiler_options_lower_xlas_cpu_level_for_f32_programs_only():
    level1 = {"xla_backend_optimization_level": 1}
    assert precision.compiler_options("f32", "cpu") == precision.compiler_options("tf32", "cpu") == level1
    assert precision.compiler_options("bf16", "cpu") == {}  # measured slower there (benchmarks/compile_level.py)
    assert precision.compiler_options("f32", "cuda") == precision.compiler_options("f32", "tpu") == {}
    with pytest.raises(ValueError, match="unknown precision"):
        precision.compiler_options("fp8", "cpu")


@pytest.mark.parametrize("setting", ["f32", "bf16"])
def test_the_trainers_programs_compile_with_the_precisions_options(setting, monkeypatch):
    """Every program the trainer jits (train, evaluation with and without SynOps, masks folded) carries the options
    of its run's precision; the cost report's counting pass those of f32, where it counts."""
    from jsnn import trainer as trainer_module
    from jsnn.efficiency import counting
    from jsnn.training_rules import MaskedTraining

    seen = []
    real_jit = jax.jit

    def recording_jit(fn=None, **kwargs):
        seen.append(kwargs.get("compiler_options"))
        return real_jit(fn, **kwargs)

    for module in (trainer_module, counting):
        monkeypatch.setattr(module.jax, "jit", recording_jit)
    ds, config, model, trainer = small_digits_with(precision=setting)
    rule = MaskedTraining()
    trainer.jitted_steps(rule)
    trainer._jit_eval_step(count_synops=True)
    expected = precision.compiler_options(setting)
    assert len(seen) == 4 and all(options == expected for options in seen)
    seen.clear()
    counting._counter.__wrapped__(counting._counting_model(model), ())  # past its cache: the jit call itself
    assert seen == [precision.compiler_options("f32")]


def small_digits_with(**changes):
    from jsnn.models import build_model
    from jsnn.trainer import Trainer

    ds, config, _, _ = small_data.small_digits("imp")
    config = dataclasses.replace(config, **changes)
    model = build_model(config, ds.num_classes)
    return ds, config, model, Trainer(config, model, ds)
