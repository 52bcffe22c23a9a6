"""Shi et al.'s mask learning as published (jsnn/sparsity/connection_penalty.py) against a NumPy transcription of their
``calc_c``, ``PenaltyTerm`` and one step of torch's Adam on the mask logits, on a small two-block layer."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn.sparsity import connection_penalty


def blocks():
    # conv 3x3 stride 1 on 8x8 (4 -> 6 channels) feeding conv 3x3 stride 2 (6 -> 5), read by a linear "1x1"
    block = connection_penalty.Block
    return [block("b0", (8, 8), (3, 3), 1, 6), block("b1", (8, 8), (3, 3), 2, 5, ("b0",)),
            block("fc", (1, 1), (1, 1), 1, 10, ("b1",))]


def test_usage_constants_by_hand():
    c_w, c_n = connection_penalty.usage_constants(blocks())
    assert c_w == {"b0": 64.0, "b1": 16.0, "fc": 1.0}  # output positions: 8*8/1, 8*8/4, 1
    assert c_n == {"b0": 5 * 9 / 4, "b1": 10.0, "fc": 0.0}  # fan-out of the reader: C_out k_h k_w / s^2


def numpy_penalty(wl, nl, c_w, c_n, lam, bw, bn):
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    return (sum(lam * c_n[k] * sig(bn * v).sum() for k, v in nl.items())
            + sum(lam * c_w[k] * sig(bw * v).sum() for k, v in wl.items()))


def numpy_adam_step(p, g, m, v, t, lr, wd, b1=0.9, b2=0.999, eps=1e-8):
    """torch.optim.Adam.step (weight_decay added to the gradient), written out."""
    g = g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_penalty_and_two_mask_updates_match_a_numpy_transcription(wd):
    rng = np.random.default_rng(0)
    c_w, c_n = connection_penalty.usage_constants(blocks())
    wl = {"b0": rng.normal(0, 0.3, (3, 3, 4, 6)), "b1": rng.normal(0, 0.3, (3, 3, 6, 5))}
    nl = {"b0": rng.normal(0, 0.3, (8, 8, 6)), "b1": rng.normal(0, 0.3, (4, 4, 5))}  # per position (H, W, C)
    lam, lr = 1e-3, 0.01
    logits = {"weights": {k: jnp.asarray(v, jnp.float32) for k, v in wl.items()},
              "neurons": {k: jnp.asarray(v, jnp.float32) for k, v in nl.items()}}
    beta = float(connection_penalty.temperature(3, 5.0, 1000.0, 0, 10))
    got = float(connection_penalty.penalty(logits["weights"], logits["neurons"], c_w, c_n, lam, beta, beta))
    assert got == pytest.approx(numpy_penalty(wl, nl, c_w, c_n, lam, beta, beta), rel=1e-5)

    opt = connection_penalty.mask_optimizer(lr, wd)
    state = opt.init(logits)
    ref = {("weights", k): v.copy() for k, v in wl.items()} | {("neurons", k): v.copy() for k, v in nl.items()}
    moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in ref.items()}
    task = {key: rng.normal(0, 1e-3, v.shape) for key, v in ref.items()}
    for t in (1, 2):
        task_grads = {"weights": {k: jnp.asarray(task[("weights", k)], jnp.float32) for k in wl},
                      "neurons": {k: jnp.asarray(task[("neurons", k)], jnp.float32) for k in nl}}
        logits, state = connection_penalty.mask_update(logits, task_grads, state, opt, c_w, c_n, lam, beta, beta)
        for (kind, k), p in ref.items():
            s = 1.0 / (1.0 + np.exp(-beta * p))
            c = c_w[k] if kind == "weights" else c_n[k]
            grad = task[(kind, k)] + lam * c * beta * s * (1 - s)  # d/dm lam c sigma(beta m)
            ref[(kind, k)], *moments[(kind, k)] = numpy_adam_step(p, grad, *moments[(kind, k)], t, lr, wd)
            np.testing.assert_allclose(np.asarray(logits[kind][k]), ref[(kind, k)], rtol=1e-5, atol=1e-6)


def test_temperature_schedule_and_binary_mask():
    # SplitTemperatureScheduler: beta0 before T0, beta1 after Tmax, exponential between
    assert float(connection_penalty.temperature(2, 5.0, 1000.0, 4, 14)) == pytest.approx(5.0)
    assert float(connection_penalty.temperature(9, 5.0, 1000.0, 4, 14)) == pytest.approx(5.0 * 200 ** 0.5, rel=1e-5)
    assert float(connection_penalty.temperature(20, 5.0, 1000.0, 4, 14)) == pytest.approx(1000.0)
    np.testing.assert_array_equal(connection_penalty.binary_mask(jnp.array([-1.0, 0.0, 1e-9])), [0.0, 0.0, 1.0])
    # masks initialised at 0 (Shi et al.'s default): sigma = 0.5 while searching, all pruned once fixed
    assert float(connection_penalty.soft_mask(jnp.zeros(()), 5.0)) == 0.5
    assert float(connection_penalty.binary_mask(jnp.zeros(()))) == 0.0
    assert jax.grad(lambda m: connection_penalty.soft_mask(m, 2.0))(0.0) == pytest.approx(0.5)
