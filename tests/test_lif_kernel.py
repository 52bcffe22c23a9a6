"""The C++ LIF kernel (jsnn/lif_kernel.py) against the lax.scan it replaces, and where jsnn runs it.

The reference is the scan (``JSNN_LIF_IMPL=scan``), differentiated by JAX's autodiff: an independent
derivation of the backward pass the kernel writes out by hand."""
import logging
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import lif_kernel, native, neuron
from jsnn.models import get_model
from jsnn.neuron import LIFConfig, lif_time_major
from jsnn.surrogate import Surrogate
from jsnn.variables import apply_model, init_variables
from tests.programs import two_device_script


# JSNN_LIF_IMPL is read where a function is traced, and JAX keeps one trace per function: each call jits a new
# wrapper, so that the same function run under "kernel" and then "scan" is traced under each
def _scan(monkeypatch, fn, *args):
    monkeypatch.setenv("JSNN_LIF_IMPL", "scan")
    return jax.jit(lambda *a: fn(*a))(*args)


def _kernel(monkeypatch, fn, *args):
    monkeypatch.setenv("JSNN_LIF_IMPL", "kernel")
    return jax.jit(lambda *a: fn(*a))(*args)


def _uses_kernel(fn, *args) -> bool:
    return "jsnn_lif" in str(jax.make_jaxpr(fn)(*args))


def _grad_close(got, ref):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape and np.all(np.isfinite(got))
    # XLA contracts some of the scan's multiply-adds into FMAs; the kernel rounds each operation
    assert np.max(np.abs(got - ref)) <= 1e-6 * np.max(np.abs(ref))


CONFIGS = [LIFConfig(surrogate=Surrogate(f), reset=r, detach_reset=d, reset_value=0.1 if r == "hard" else 0.0)
           for f in lif_kernel.SURROGATES for r in ("hard", "soft") for d in (True, False)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c.surrogate.name}-{c.reset}-detach{c.detach_reset}")
def test_spikes_equal_the_scan_bit_for_bit_and_gradients_agree(monkeypatch, config):
    x = 1.2 * jax.random.normal(jax.random.key(1), (7, 3, 41, 29))  # N = 3567: one block, not a multiple of 16
    weight = jnp.cos(3.0 * x)  # a dL/dS that differs per neuron and step

    def loss(x):
        return jnp.sum(lif_time_major(x, config) * weight)

    monkeypatch.delenv("JSNN_LIF_IMPL", raising=False)
    assert _uses_kernel(lambda x: lif_time_major(x, config), x) is False  # the default (auto) at T = 7: scan
    monkeypatch.setenv("JSNN_LIF_IMPL", "kernel")
    assert _uses_kernel(lambda x: lif_time_major(x, config), x)
    spikes = _kernel(monkeypatch, lambda x: lif_time_major(x, config), x)
    ref = _scan(monkeypatch, lambda x: lif_time_major(x, config), x)
    assert 0.05 < float(ref.mean()) < 0.5  # both outcomes occur
    np.testing.assert_array_equal(spikes, ref)
    _grad_close(_kernel(monkeypatch, jax.grad(loss), x), _scan(monkeypatch, jax.grad(loss), x))


@pytest.mark.parametrize("config", CONFIGS[:4], ids=lambda c: f"{c.surrogate.name}-{c.reset}-detach{c.detach_reset}")
def test_with_the_potentials_returned_both_equal_the_scan_and_both_carry_gradients(monkeypatch, config):
    x = 1.2 * jax.random.normal(jax.random.key(7), (6, 5, 37))
    ws, wu = jnp.cos(3.0 * x), jnp.sin(2.0 * x)

    def layer(x):
        return lif_time_major(x, config, return_potential=True)

    def loss(x):  # a loss that reads the potentials as well as the spikes
        s, u = layer(x)
        return jnp.sum(s * ws) + jnp.sum(u * wu)

    monkeypatch.setenv("JSNN_LIF_IMPL", "kernel")
    assert _uses_kernel(layer, x)
    (s, u), (rs, ru) = _kernel(monkeypatch, layer, x), _scan(monkeypatch, layer, x)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(u, ru)
    _grad_close(_kernel(monkeypatch, jax.grad(loss), x), _scan(monkeypatch, jax.grad(loss), x))


@pytest.mark.parametrize("config", CONFIGS[:4], ids=lambda c: f"{c.surrogate.name}-{c.reset}-detach{c.detach_reset}")
def test_a_batchnorm_map_computed_in_the_kernel_equals_it_applied_first(monkeypatch, config):
    """``affine``: the layer's input x * scale + shift per channel (last axis). 13 channels over 15 blocks of
    neurons (N = 59,163, split over two threads): each block starts at another channel. Spikes and potentials
    equal the scan's over the map XLA computes first; gradients in x, scale and shift agree."""
    x = jax.random.normal(jax.random.key(8), (5, 3, 37, 41, 13))
    scale = jax.random.uniform(jax.random.key(9), (13,), minval=0.3, maxval=2.0)
    shift = 0.5 * jax.random.normal(jax.random.key(10), (13,))
    ws, wu = jnp.cos(3.0 * x), jnp.sin(2.0 * x)

    def layer(x, scale, shift):
        return lif_time_major(x, config, return_potential=True, affine=(scale, shift))

    def loss(x, scale, shift):
        s, u = layer(x, scale, shift)
        return jnp.sum(s * ws) + jnp.sum(u * wu)

    def spikes_loss(x, scale, shift):
        return jnp.sum(lif_time_major(x, config, affine=(scale, shift)) * ws)

    monkeypatch.setenv("JSNN_LIF_IMPL", "kernel")
    assert "jsnn_lif_affine_spikes_and_potentials" in str(jax.make_jaxpr(layer)(x, scale, shift))
    # the reference: the map computed first as one fused multiply-add (what XLA's CPU backend makes of BatchNorm's
    # x * a + b in the programs; this suite compiles at LLVM's lowest level, which does not contract it): the
    # product is exact in f64, and the f64 sum rounded to f32 is the fused multiply-add's result but where the two
    # roundings meet a tie, which these values do not (checked against XLA's contracted map at its default level)
    mapped = jnp.asarray((np.asarray(x, np.float64) * np.asarray(scale) + np.asarray(shift)).astype(np.float32))
    (s, u) = _kernel(monkeypatch, layer, x, scale, shift)
    (rs, ru) = _scan(monkeypatch, lambda z: lif_time_major(z, config, return_potential=True), mapped)
    assert 0.05 < float(rs.mean()) < 0.5
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(u, ru)
    np.testing.assert_array_equal(_kernel(monkeypatch, lambda *a: lif_time_major(a[0], config, affine=a[1:]),
                                          x, scale, shift), rs)
    for f in (loss, spikes_loss):
        got = _kernel(monkeypatch, jax.grad(f, argnums=(0, 1, 2)), x, scale, shift)
        ref = _scan(monkeypatch, jax.grad(f, argnums=(0, 1, 2)), x, scale, shift)
        for g, r in zip(got, ref):
            # the per-channel sums add up 10^5 terms in another order
            assert np.max(np.abs(np.asarray(g) - np.asarray(r))) <= 1e-5 * np.max(np.abs(np.asarray(r)))
    with pytest.raises(ValueError, match="one value per channel"):
        lif_kernel.lif_spikes(x, config, affine=(scale[:12], shift[:12]))


def test_many_blocks_over_two_threads_and_one_timestep(monkeypatch):
    """N = 40,000 neurons (10 blocks) over T = 4 splits over two threads; T = 1 is a single step."""
    config = LIFConfig()
    for shape in ((4, 40000), (1, 5, 7)):
        x = 1.5 * jax.random.normal(jax.random.key(2), shape)
        np.testing.assert_array_equal(_kernel(monkeypatch, lambda x: lif_time_major(x, config), x),
                                      _scan(monkeypatch, lambda x: lif_time_major(x, config), x))

        def loss(x):
            return jnp.sum(lif_time_major(x, config) * jnp.sin(x))

        _grad_close(_kernel(monkeypatch, jax.grad(loss), x), _scan(monkeypatch, jax.grad(loss), x))


def test_under_vmap_the_mapped_axis_is_not_read_as_time(monkeypatch):
    config = LIFConfig()
    x = 1.5 * jax.random.normal(jax.random.key(3), (3, 6, 4, 5))  # vmapped over the first axis; T = 6
    f = jax.vmap(lambda x: lif_time_major(x, config))
    np.testing.assert_array_equal(_kernel(monkeypatch, f, x), _scan(monkeypatch, f, x))


def test_a_models_training_step_agrees_with_the_scan(monkeypatch):
    """digits_cnn at T = 16: logits equal and weight gradients agree (BN in training mode, three LIF layers)."""
    model = get_model("digits_cnn", 10, timesteps=16)
    images = jax.random.uniform(jax.random.key(4), (8, 8, 8, 1))
    variables = init_variables(model, jax.random.key(5), images.shape)

    def loss(weights):
        logits, _, _ = apply_model(model, variables._replace(weights=weights), images, train=True)
        return jnp.mean(jax.nn.log_softmax(logits.mean(0))[:, 3]), logits

    monkeypatch.setenv("JSNN_LIF_IMPL", "auto")  # at T = 16 on one CPU device, auto picks the kernel
    # the LIF layers fed by spikes compute their conv's BatchNorm map in the kernel; the first layer's currents,
    # one image's repeated over T, have it applied before they are repeated
    step = str(jax.make_jaxpr(jax.grad(lambda w: loss(w)[0]))(variables.weights))
    assert step.count("jsnn_lif_affine_spikes_and_potentials") == 2 and step.count("jsnn_lif_backward") == 3
    (_, logits), grads = _kernel(monkeypatch, jax.value_and_grad(loss, has_aux=True), variables.weights)
    (_, ref_logits), ref_grads = _scan(monkeypatch, jax.value_and_grad(loss, has_aux=True), variables.weights)
    np.testing.assert_array_equal(logits, ref_logits)
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        assert np.max(np.abs(np.asarray(g) - np.asarray(r))) <= 1e-5 * np.max(np.abs(np.asarray(r)))
    # evaluation (BatchNorm's running statistics): the forward pass alone, the map in the kernel, the same logits
    def evaluate(variables):
        return apply_model(model, variables, images, train=False)[0]

    monkeypatch.setenv("JSNN_LIF_IMPL", "auto")
    assert str(jax.make_jaxpr(evaluate)(variables)).count("jsnn_lif_affine_spikes") == 2
    np.testing.assert_array_equal(_kernel(monkeypatch, evaluate, variables), _scan(monkeypatch, evaluate, variables))


def test_auto_picks_the_kernel_only_where_it_pays_and_is_safe(monkeypatch):
    monkeypatch.delenv("JSNN_LIF_IMPL", raising=False)
    long_t = jnp.ones((neuron.KERNEL_MIN_T, 2, 3))
    assert neuron.use_kernel(long_t, LIFConfig())
    assert not neuron.use_kernel(jnp.ones((neuron.KERNEL_MIN_T - 1, 2, 3)), LIFConfig())  # short T: the scan
    assert not neuron.use_kernel(long_t, LIFConfig(unroll=2))  # the caller chose the scan's unrolling
    assert not neuron.use_kernel(long_t, LIFConfig(surrogate=Surrogate("sigmoid")))  # no such surrogate in C++
    assert not neuron.use_kernel(long_t.astype(jnp.bfloat16), LIFConfig())
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")  # registered for the CPU only
    assert not neuron.use_kernel(long_t, LIFConfig())
    monkeypatch.undo()
    monkeypatch.setenv("JSNN_LIF_IMPL", "scan")
    assert not neuron.use_kernel(long_t, LIFConfig())
    monkeypatch.setenv("JSNN_LIF_IMPL", "kernel")  # any T, still not where it cannot compute the layer
    assert neuron.use_kernel(jnp.ones((2, 3)), LIFConfig(unroll=2))
    assert not neuron.use_kernel(jnp.ones((2, 3)), LIFConfig(surrogate=Surrogate("sigmoid")))
    monkeypatch.setenv("JSNN_LIF_IMPL", "fast")
    with pytest.raises(ValueError, match="JSNN_LIF_IMPL='fast' is not one of auto, scan, kernel"):
        neuron.lif_impl()


def test_without_a_compiler_auto_falls_back_to_the_scan_with_one_line(monkeypatch, caplog):
    def missing():
        raise native.CompilerMissing("the LIF kernel needs a C++ compiler: none of g++, c++, clang++ was found")

    monkeypatch.delenv("JSNN_LIF_IMPL", raising=False)
    monkeypatch.setattr(lif_kernel, "load", missing)
    neuron._kernel_builds.cache_clear()
    try:
        x = 1.5 * jax.random.normal(jax.random.key(6), (neuron.KERNEL_MIN_T, 4, 3))
        with caplog.at_level(logging.WARNING, logger="jsnn.neuron"):
            assert not _uses_kernel(lambda x: lif_time_major(x, LIFConfig()), x)
            assert not neuron.use_kernel(x, LIFConfig())
        said = [r.getMessage() for r in caplog.records if r.name == "jsnn.neuron"]
        assert said == ["LIF layers run as a scan: the LIF kernel needs a C++ compiler: none of g++, c++, clang++ "
                        "was found"]  # once per process
        monkeypatch.setenv("JSNN_LIF_IMPL", "kernel")  # asked for: the error itself, in one line
        with pytest.raises(native.CompilerMissing, match="needs a C.. compiler"):
            lif_time_major(x, LIFConfig())
    finally:
        neuron._kernel_builds.cache_clear()


def test_the_kernel_refuses_what_it_cannot_compute_in_one_line(monkeypatch):
    with pytest.raises(ValueError, match="no 'sigmoid' surrogate"):
        lif_kernel.lif_spikes(jnp.ones((2, 3)), LIFConfig(surrogate=Surrogate("sigmoid")))
    with pytest.raises(ValueError, match="takes f32 currents, got bfloat16"):
        lif_kernel.lif_spikes(jnp.ones((2, 3), jnp.bfloat16), LIFConfig())
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with pytest.raises(ValueError, match="runs on the CPU only, and JAX computes on gpu"):
        lif_kernel.lif_spikes(jnp.ones((2, 3)), LIFConfig())


def test_over_two_devices_the_kernel_runs_on_each_devices_images_and_equals_one_device():
    """The programs' train step at T = 16 on a 2-device mesh (tests/scripts/multidevice_lif_kernel.py): the
    kernel runs (auto) on each device's half of the batch, and gives one device's values."""
    env = {k: v for k, v in os.environ.items() if k != "JSNN_LIF_IMPL"}
    # XLA's convolutions on both meshes: the event-driven ones run on the 2-device mesh only (a custom call
    # needs the trainer's per-device body), and their filter gradient's other summation order flips a spike
    # somewhere in two T = 16 steps (a loss 0.004 apart): the same convolutions isolate the LIF kernel
    env["JSNN_EVENT_CONV"] = "0"
    result = two_device_script("multidevice_lif_kernel.py", env)
    assert result["kernel_batches"] == {"auto/1": [16], "auto/2": [8], "scan/2": []}
    assert result["two_devices_vs_one"] < 1e-5 and result["kernel_vs_scan"] < 1e-5


def test_outside_the_trainers_split_the_partitioning_rule_keeps_the_kernel_on_each_devices_images():
    """A jitted function over a batch-sharded array (as the statistics passes run, without jsnn.batch_split):
    the partitioning rule splits the kernel's call as its operand is split (run in a 2-device subprocess)."""
    code = """
import jax, jax.numpy as jnp, numpy as np, re
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from jsnn.neuron import LIFConfig, lif_time_major
mesh = Mesh(np.array(jax.devices()), ("data",))
x = jax.device_put(jax.random.normal(jax.random.key(0), (16, 8, 5)), NamedSharding(mesh, P(None, "data")))
f = jax.jit(jax.grad(lambda x: jnp.sum(lif_time_major(x, LIFConfig()) * jnp.cos(x))))
calls = [l for l in f.lower(x).compile().as_text().splitlines() if 'custom_call_target="jsnn_lif' in l]
print(sorted({int(re.search(r"f32\\[\\d+,(\\d+)", l).group(1)) for l in calls}), f(x).sharding.spec)
"""
    env = {k: v for k, v in os.environ.items() if k != "JSNN_LIF_IMPL"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[4] P(None, 'data')"  # 4 of 8 images a device
