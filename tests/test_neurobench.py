"""jsnn.efficiency against NeuroBench 2.3.0 on a PyTorch twin of a digits ticket.

The twin is built by hand here: the same kernels (masked), BN, LIF dynamics (U = H + X,
spike at U >= V_th, H = beta U or 0 after a spike) and direct encoding, as an snnTorch
``SpikingNeuron`` subclass so NeuroBench hooks it. Weights, BN shifts and images are
dyadic (weights multiples of 1/64, pixels k/16, BN var + eps = 1), so both frameworks
compute every membrane potential exactly, whatever their summation order: the spikes are
identical and every count must agree to the operation.

Where the definitions agree the numbers are equal: ACs, MACs, Dense, activation sparsity,
membrane updates. Where they differ the difference is exact and asserted:
  * Footprint: NeuroBench counts every PyTorch buffer, also BN's int64
    num_batches_tracked and snnTorch's threshold / graded-spike / reset buffers;
  * ConnectionSparsity is rounded to 4 decimals by NeuroBench;
  * encoding: NeuroBench counts each call of a layer. Under direct encoding the encoding
    conv runs once (jsnn counts its MACs once); a twin that reruns it at every timestep
    (as snnTorch examples do) gets T times the encoding MACs from NeuroBench.
NeuroBench counts neither BN, pooling nor bias operations; jsnn reports them separately.
"""
import jax
import numpy as np
import pytest
import snntorch
import torch
from neurobench.benchmarks import Benchmark
from neurobench.metrics.static import ConnectionSparsity, Footprint
from neurobench.metrics.workload import ActivationSparsity, MembraneUpdates, SynapticOperations
from neurobench.models import SNNTorchModel
from torch.utils.data import DataLoader, TensorDataset

from jsnn import efficiency as E
from jsnn.data import load_dataset
from jsnn.models import get_model
from jsnn.variables import Variables, apply_model, init_variables

T = 4
VAR_ONE = np.float32(1.0) - np.float32(1e-5)  # var + eps == 1 in f32: BN divides by exactly 1


class JsnnLIF(snntorch.SpikingNeuron):
    """jsnn's LIF (U = H + X, spike at U >= threshold, H = beta U (1 - S): hard reset to 0) stepping one
    timestep per call; ``mem`` holds H."""

    def __init__(self, beta: float, threshold: float):
        super().__init__(threshold=threshold, init_hidden=True, reset_mechanism="zero")
        self.beta = beta
        self.spikes = 0
        self.mem = torch.zeros(1)

    def reset_state(self):
        self.mem = torch.zeros(1)

    def forward(self, x):
        u = self.mem + x
        s = (u - self.threshold >= 0).to(x.dtype)
        self.mem = self.beta * u * (1.0 - s)
        self.spikes += int(s.sum())
        return s


class Twin(torch.nn.Module):
    """A SpikingVGG ticket (plan of convs and "M" pools, then a linear classifier) in PyTorch."""

    def __init__(self, model, variables: Variables, encode_every_step: bool = False):
        super().__init__()
        self.encode_every_step = encode_every_step
        self.plan = model.plan
        w, m = variables.weights, variables.masks
        self.convs, self.bns, self.lifs = torch.nn.ModuleList(), torch.nn.ModuleList(), torch.nn.ModuleList()
        n = 0
        for item in model.plan:
            if item == "M":
                continue
            kernel = np.asarray(w[f"conv{n}"]["kernel"]) * np.asarray(m[f"conv{n}"]["kernel"])
            conv = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], 3, padding=1, bias=False)
            conv.weight.data = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy())  # HWIO -> OIHW
            bn = torch.nn.BatchNorm2d(kernel.shape[3], eps=model.bn.epsilon, affine=model.bn.affine)
            bn.running_mean.data = torch.from_numpy(np.asarray(variables.batch_stats[f"conv{n}"]["mean"]).copy())
            bn.running_var.data = torch.from_numpy(np.asarray(variables.batch_stats[f"conv{n}"]["var"]).copy())
            if model.bn.affine:
                bn.weight.data = torch.from_numpy(np.asarray(variables.bn[f"conv{n}"]["scale"]).copy())
                bn.bias.data = torch.from_numpy(np.asarray(variables.bn[f"conv{n}"]["bias"]).copy())
            self.convs.append(conv)
            self.bns.append(bn)
            self.lifs.append(JsnnLIF(model.lif.decay, model.lif.threshold))
            n += 1
        kernel = np.asarray(w["fc"]["kernel"]) * np.asarray(m["fc"]["kernel"])
        self.fc = torch.nn.Linear(*kernel.shape)
        self.fc.weight.data = torch.from_numpy(kernel.T.copy())
        self.fc.bias.data = torch.from_numpy(np.asarray(w["fc"]["bias"]).copy())
        self.encoded = None
        self.eval()  # BN on its running statistics, as jsnn's evaluation

    def reset(self):  # SNNTorchModel calls this before every batch
        self.encoded = None
        for lif in self.lifs:
            lif.reset_state()

    def forward(self, image):  # one timestep: image [B, C, H, W]
        if self.encoded is None or self.encode_every_step:  # direct encoding: conv0 + BN once
            self.encoded = self.bns[0](self.convs[0](image))
        x, n = self.lifs[0](self.encoded), 1
        for item in self.plan[1:]:
            if item == "M":
                x = torch.nn.functional.max_pool2d(x, 2)
                continue
            x = self.lifs[n](self.bns[n](self.convs[n](x)))
            n += 1
        logits = self.fc(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1))  # NHWC flatten, as jsnn
        return logits, None


def _dyadic_ticket():
    """A digits_cnn ticket on a dyadic grid: ~60% of weights removed at random; BN scale 2
    (in place of training) keeps every layer firing."""
    model = get_model("digits_cnn", 10, timesteps=T)
    v = init_variables(model, jax.random.key(3), (1, 8, 8, 1))
    rng = np.random.default_rng(3)
    weights = jax.tree.map(lambda a: np.round(np.asarray(a) * 64) / 64, v.weights)
    masks = jax.tree.map(lambda a: (rng.random(a.shape) < 0.4).astype(np.float32), v.masks)
    bn = {k: {"scale": np.full_like(s["scale"], 2.0), "bias": np.round(rng.normal(0, 0.3, s["bias"].shape) * 16) / 16}
          for k, s in v.bn.items()}
    stats = {k: {"mean": np.round(rng.normal(0, 0.3, s["mean"].shape) * 16) / 16,
                 "var": np.full(s["var"].shape, VAR_ONE)} for k, s in v.batch_stats.items()}
    return model, jax.tree.map(np.float32, Variables(weights, masks, bn, stats))


def _neurobench(twin, images_nhwc):
    data = torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())  # NCHW
    data = data[:, None].expand(-1, T, -1, -1, -1).contiguous()  # [B, T, C, H, W]: the image at every step
    loader = DataLoader(TensorDataset(data, torch.zeros(len(data), dtype=torch.long)), batch_size=120)
    bench = Benchmark(SNNTorchModel(twin), loader, [], [],
                      [[Footprint, ConnectionSparsity],
                       [SynapticOperations, ActivationSparsity, MembraneUpdates]])
    with torch.no_grad():
        return bench.run(quiet=True)


@pytest.fixture(scope="module")
def setting():
    model, variables = _dyadic_ticket()
    test_images = load_dataset("digits").test_images.astype(np.float32) / 16  # pixels k/16: dyadic
    return model, variables, test_images, E.measure(model, variables, test_images, batch_size=120)


def test_twin_is_the_ticket(setting):
    """Same logits at every timestep, same spikes per layer: the twin is an exact copy."""
    model, variables, images, report = setting
    twin = Twin(model, variables)
    twin.reset()
    with torch.no_grad():
        x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
        logits = np.stack([twin(x)[0].numpy() for _ in range(T)])
    jax_logits, _, _ = apply_model(model, variables, images, train=False)
    np.testing.assert_array_equal(logits, np.asarray(jax_logits))
    assert [lif.spikes for lif in twin.lifs] == [row["spikes"] for row in report["neurons"]]
    assert 0.05 < report["firing_rate"] < 0.6  # a ticket that spikes, not a silent one


def test_neurobench_agrees(setting):
    model, variables, images, report = setting
    twin = Twin(model, variables)
    nb = _neurobench(twin, images)
    ops = nb["SynapticOperations"]
    assert ops["Effective_ACs"] == report["synops_per_image"]
    assert ops["Effective_MACs"] == report["macs_per_image"] > 0  # the encoding conv, once
    assert ops["Dense"] == report["dense_macs_per_image"]
    assert nb["MembraneUpdates"] == report["membrane_updates_per_image"]
    spikes = sum(row["spikes"] for row in report["neurons"])
    slots = sum(row["neuron_updates_per_image"] for row in report["neurons"]) * report["images"]
    assert round((1 - nb["ActivationSparsity"]) * slots) == spikes
    assert nb["ActivationSparsity"] == pytest.approx(report["activation_sparsity"], rel=1e-12)
    assert nb["ConnectionSparsity"] == round(report["connection_sparsity"], 4)
    # footprint: jsnn's dense f32 parameters + PyTorch's bookkeeping buffers, which jsnn has not
    bookkeeping = sum(b.numel() * b.element_size() for name, b in twin.named_buffers()
                      if name.rsplit(".", 1)[-1] in ("num_batches_tracked", "threshold", "graded_spikes_factor",
                                                     "reset_mechanism_val"))
    assert bookkeeping > 0
    assert nb["Footprint"] == report["dense_footprint_bytes"] + bookkeeping


def test_encoding_every_timestep_is_counted_t_times(setting):
    """The one definition that differs: a twin that reruns the encoding conv at every step."""
    model, variables, images, report = setting
    nb = _neurobench(Twin(model, variables, encode_every_step=True), images)
    ops = nb["SynapticOperations"]
    encoding = report["layers"][0]
    assert encoding["input"] == "real" and encoding["runs_per_image"] == 1
    assert ops["Effective_MACs"] == T * report["macs_per_image"]
    assert ops["Dense"] == report["dense_macs_per_image"] + (T - 1) * encoding["dense_ops_per_image"]
    assert ops["Effective_ACs"] == report["synops_per_image"]
