"""Do all implementations compute the same thing? One forward/backward of workload (a)'s network on
shared weights, each implementation against the plain PyTorch loop.

    python -m benchmarks.check                # B 4, T 3, writes results/check.json
    python -m benchmarks.check --batch 32 --timesteps 5

Compares the logits [T, B, classes] (train mode: BN over T*B), the loss, and the gradients
of every conv kernel and of the classifier. Forward values agree to float32 rounding; a spike
sits on the threshold's edge with probability ~ rounding error, so a rare flipped spike can
show up as a somewhat larger relative gradient error — the report gives the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from benchmarks import common
from benchmarks.throughput import RESULTS


def jsnn_grads(workload, T, images, labels):
    import jax
    import jax.numpy as jnp

    from benchmarks import jsnn_impl
    from jsnn.variables import apply_model, init_variables

    case = common.Case("jsnn", workload, "train", images.shape[0], T)
    model = jsnn_impl.build_model(case, dense=False)
    v = init_variables(model, jax.random.PRNGKey(0), images.shape)

    def loss(weights, bn):
        logits, _, _ = apply_model(model, v._replace(weights=weights, bn=bn), jnp.asarray(images), train=True)
        return jsnn_impl.loss_fn(logits, jnp.asarray(labels)), logits

    (loss_value, logits), (gw, gbn) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(v.weights, v.bn)
    grads = {k: np.asarray(g["kernel"]) for k, g in gw.items()}
    grads.update({f"{k}/bias": np.asarray(g["bias"]) for k, g in gw.items() if "bias" in g})
    return v, float(loss_value), np.asarray(logits), grads


def torch_grads(module, workload, T, images, labels, weights, bn):
    import torch

    from benchmarks.peers.torch_common import ConvBN, load_jsnn_vgg

    torch.manual_seed(0)
    model = module.make_model(workload, T)
    load_jsnn_vgg(model, weights, bn)
    model.train()
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                             torch.from_numpy(labels.astype(np.int64)).repeat(T))
    loss.backward()
    convs = [model.encoder] + [m for m in model.body if isinstance(m, ConvBN)]
    grads = {f"conv{i}": c[0].weight.grad.permute(2, 3, 1, 0).numpy() for i, c in enumerate(convs)}
    h, c = model.feat_hw
    g = model.fc.weight.grad.numpy()  # [classes, (c, h, w)] -> [(h, w, c), classes]
    grads["fc"] = g.reshape(-1, c, h, h).transpose(2, 3, 1, 0).reshape(-1, g.shape[0])
    grads["fc/bias"] = model.fc.bias.grad.numpy()
    return float(loss), logits.detach().numpy(), grads


def spyx_grads(workload, T, images, labels, weights, bn):
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from benchmarks.peers import spyx_impl

    model = spyx_impl.make_model(workload, T)
    for i, conv in enumerate(model.convs):
        conv.kernel.set_value(jnp.asarray(weights[f"conv{i}"]["kernel"]))
        if bn:
            model.bns[i].scale.set_value(jnp.asarray(bn[f"conv{i}"]["scale"]))
            model.bns[i].bias.set_value(jnp.asarray(bn[f"conv{i}"]["bias"]))
    model.fc.kernel.set_value(jnp.asarray(weights["fc"]["kernel"]))
    model.fc.bias.set_value(jnp.asarray(weights["fc"]["bias"]))
    model.train()

    def loss_fn(model):
        logits = model(jnp.asarray(images))
        lab = jnp.broadcast_to(jnp.asarray(labels), logits.shape[:2])
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, lab)), logits

    (loss_value, logits), g = nnx.value_and_grad(loss_fn, has_aux=True)(model)
    grads = {f"conv{i}": np.asarray(g.convs[i].kernel.get_value()) for i in range(len(model.convs))}
    grads["fc"], grads["fc/bias"] = np.asarray(g.fc.kernel.get_value()), np.asarray(g.fc.bias.get_value())
    return float(loss_value), np.asarray(logits), grads


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", default="vgg_small", choices=["vgg_small", "vgg16"])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--timesteps", type=int, default=3)
    p.add_argument("--tol", type=float, default=1e-3, help="max relative gradient error to pass")
    p.add_argument("--out", default=str(RESULTS / "check.json"))
    args = p.parse_args(argv)
    images, labels = common.make_batch(args.batch, seed=1)
    T = args.timesteps
    v, l_ref_jsnn, logits_jsnn, g_jsnn = jsnn_grads(args.workload, T, images, labels)
    from benchmarks.peers import torch_plain

    l_ref, logits_ref, g_ref = torch_grads(torch_plain, args.workload, T, images, labels, v.weights, v.bn)
    results = {}

    def compare(name, loss, logits, grads):
        results[name] = {
            "loss_abs_diff": abs(loss - l_ref),
            "logits_max_abs_diff": float(np.max(np.abs(logits - logits_ref))),
            "grad_rel_err": {k: rel(grads[k], g_ref[k]) for k in g_ref},
        }
        worst = max(results[name]["grad_rel_err"].values())
        results[name]["worst_grad_rel_err"] = worst
        results[name]["pass"] = worst <= args.tol and results[name]["logits_max_abs_diff"] <= 1e-3
        print(f"{name:14s} loss diff {results[name]['loss_abs_diff']:.2e}  logits max diff "
              f"{results[name]['logits_max_abs_diff']:.2e}  worst grad rel err {worst:.2e}  "
              f"{'PASS' if results[name]['pass'] else 'FAIL'}")

    compare("jsnn", l_ref_jsnn, logits_jsnn, g_jsnn)
    for name, mod in (("spikingjelly", "spikingjelly_impl"), ("snntorch", "snntorch_impl")):
        try:
            import importlib

            module = importlib.import_module(f"benchmarks.peers.{mod}")
        except ImportError as e:
            results[name] = {"status": f"missing: {e}"}
            print(f"{name:14s} missing: {e}")
            continue
        compare(name, *torch_grads(module, args.workload, T, images, labels, v.weights, v.bn))
    try:
        compare("spyx", *spyx_grads(args.workload, T, images, labels, v.weights, v.bn))
    except ImportError as e:
        results["spyx"] = {"status": f"missing: {e}"}
        print(f"spyx           missing: {e}")
    meta = {"workload": args.workload, "batch": args.batch, "timesteps": T, "reference": "torch (plain loop)"}
    with open(args.out, "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=1)
    return 0 if all(r.get("pass", True) for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
