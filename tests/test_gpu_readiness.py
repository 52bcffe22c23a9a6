"""Ready for a GPU or TPU, checked on this CPU (docs/gpu.md): the install extras resolve, a required
platform that is missing stops in one line, the platform reaches config.json and the signature, the
deterministic flags are known to this jaxlib, the sparse kernel refuses a GPU backend, its build cache
is keyed by the CPU, denormal scores rank as zeros on every backend, and the train steps lower for
CUDA and TPU. Cluster detection: tests/test_cluster_detection.py."""
import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsnn import native, platform
from jsnn.sparse_inference import kernel, predict_sparse
from jsnn.sparsity import dynamic
from jsnn.sparsity.masks import _order_preserving_int32, keep_largest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- install -----------------------------------------------------------------------------------------------

def test_accelerator_extras_pin_the_jax_in_use_and_resolve():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    version = importlib.metadata.version("jax")
    assert project["requires-python"] == ">=3.11"  # jax 0.10.2's own floor
    extras = project["optional-dependencies"]
    for extra in ("cuda12", "cuda13", "tpu"):
        assert extras[extra] == [f"jax[{extra}]=={version}"], extra
    # what jax's own extras bring at this version (its metadata), resolved on the index: the GPU plugins
    # built for this jaxlib, and libtpu. --no-deps: the CUDA wheels under them are the plugin's business.
    wanted = [r.split(";")[0].replace("<=", "==", 1).split(",")[0] for r in importlib.metadata.requires("jax")
              if re.search(r'extra == "(cuda12|cuda13|tpu)"', r) and not r.startswith(("jaxlib", "requests"))]
    wanted = sorted(set(wanted))
    assert any(w.startswith("jax-cuda12-plugin") for w in wanted) and any(w.startswith("libtpu") for w in wanted)
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet",
           "--report", "-", "--disable-pip-version-check", *wanted]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        probe = subprocess.run(cmd[:-len(wanted)] + [f"jax=={version}"], capture_output=True, text=True, timeout=60)
        if probe.returncode != 0:
            pytest.skip(f"the package index is unreachable (pip cannot resolve jax=={version} either)")
        pytest.fail(f"the extras do not resolve: {proc.stderr.strip().splitlines()[-1:]}")
    found = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(proc.stdout)["install"]}
    assert found["jax-cuda12-plugin"] == found["jax-cuda13-plugin"] == version
    assert found["libtpu"].startswith("0.0.")


# -- platform ----------------------------------------------------------------------------------------------

def test_a_required_platform_that_is_missing_stops_in_one_line():
    platform.require(None)
    platform.require("cpu")  # the tests compute on the CPU
    for wanted in ("gpu", "tpu"):
        with pytest.raises(ValueError) as e:
            platform.require(wanted)
        message = str(e.value)
        assert "\n" not in message and f"--platform {wanted}" in message and "JAX runs on cpu" in message
        assert f"jsnn[{'cuda12' if wanted == 'gpu' else 'tpu'}]" in message
    with pytest.raises(ValueError, match="must be one of"):
        platform.require("cuda")


def test_the_platform_in_config_json_the_signature_and_the_epoch_line(tmp_path, monkeypatch):
    from jsnn.config import TrainConfig
    from jsnn.runs.workdir import claim_workdir, release_workdir, run_signature
    from jsnn.trainer import _epoch_line

    monkeypatch.delenv("XLA_FLAGS", raising=False)
    config = TrainConfig(epochs=1, timesteps=2, batch_size=32, progress=False).resolve("dense")
    cpu = run_signature("dense", config)
    assert "platform" not in cpu and "deterministic" not in cpu  # a CPU run's signature as before
    claim_workdir(str(tmp_path), cpu, config.to_dict())
    release_workdir(str(tmp_path))
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["platform"] == "cpu" and written["device_kind"] == jax.devices()[0].device_kind
    assert written["device_count"] == jax.device_count()
    line = _epoch_line({"epoch": 1, "loss": 1.0, "train_accuracy": 0.5, "learning_rate": 0.1, "sparsity": 0.0,
                        "images_per_sec": 10.0})
    assert line.endswith("10 img/s on cpu")
    # on a GPU (faked: the signature reads only the backend's name) and in deterministic mode
    monkeypatch.setattr(platform.jax, "default_backend", lambda: "gpu")
    monkeypatch.setenv("XLA_FLAGS", " ".join(platform.DETERMINISTIC_FLAGS))
    gpu = run_signature("dense", config)
    assert gpu == {**cpu, "platform": "gpu", "deterministic": True}


def test_deterministic_mode_adds_flags_this_jaxlib_knows(monkeypatch):
    environ = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"}
    updates = []
    monkeypatch.setattr(platform.jax.config, "update", lambda *a: updates.append(a))
    monkeypatch.setattr(platform, "_platforms_chosen", lambda: False)
    platform.configure("cpu", deterministic=True, environ=environ)
    assert updates == [("jax_platforms", "cpu")]  # --platform cpu: a GPU host's JAX stays on its CPU
    assert environ["XLA_FLAGS"].split() == ["--xla_cpu_experimental_ynn_fusion_type=-individual_convolution",
                                            *platform.DETERMINISTIC_FLAGS]
    platform.configure(None, deterministic=True, environ=environ)  # again: nothing added twice
    assert environ["XLA_FLAGS"].split().count(platform.DETERMINISTIC_FLAGS[0]) == 1
    assert platform.is_deterministic(environ) and not platform.is_deterministic({})
    # under a jaxlib the flags were not checked with: one line, XLA_FLAGS untouched (XLA would abort on an
    # unknown flag); flags the user set by hand count as deterministic
    other = {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true"}
    with pytest.raises(ValueError) as e:
        platform.configure(None, deterministic=True, environ=other, jaxlib="0.11.0")
    assert "\n" not in str(e.value) and "jaxlib 0.11.0" in str(e.value)
    assert other == {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=true"}
    by_hand = {"XLA_FLAGS": platform.DETERMINISTIC_FLAGS[1]}
    platform.configure(None, deterministic=True, environ=by_hand, jaxlib="0.11.0")
    assert platform.is_deterministic(by_hand)
    assert importlib.metadata.version("jaxlib") in platform.DETERMINISTIC_JAXLIB  # checked: gpu_check's flag guard
    # XLA aborts the process on a flag it does not know: that this jaxlib knows them is checked by
    # benchmarks/gpu_check.py's flag guard (test_gpu_check_cpu_mode_writes_one_results_file)


def test_the_programs_take_platform_and_deterministic():
    sys.path.insert(0, os.path.join(ROOT, "train"))
    try:
        import dense
    finally:
        sys.path.remove(os.path.join(ROOT, "train"))
    args = dense.parser().parse_args(["--platform", "gpu", "--deterministic"])
    assert args.platform == "gpu" and args.deterministic is True
    args = dense.parser().parse_args([])
    assert args.platform is None and args.deterministic is False


# -- the sparse inference kernel -------------------------------------------------------------------------------

def test_the_sparse_kernel_on_a_gpu_backend_is_one_line_or_the_dense_path(monkeypatch):
    import jsnn.sparse_inference as sparse_inference

    monkeypatch.setattr(kernel, "backend", lambda: "gpu")
    x, w = jnp.ones((1, 4, 4, 2)), jnp.ones((3, 3, 2, 4))
    with pytest.raises(kernel.NotOnCPU) as e:
        kernel.spike_conv(x, w, 1, 1)
    assert "\n" not in str(e.value) and "CPU only" in str(e.value) and "on gpu" in str(e.value)
    # predict_sparse: the dense path (apply_model in evaluation mode), the CPU kernel never loaded
    monkeypatch.setattr(kernel, "load", lambda: pytest.fail("the CPU kernel was loaded on a GPU backend"))
    calls = []
    monkeypatch.setattr(sparse_inference, "apply_model", lambda *a, **kw: calls.append((a, kw)) or ("logits",))
    assert predict_sparse("model", "variables", "images") == "logits"
    assert calls == [(("model", "variables", "images"), {"train": False})]


def test_the_kernel_build_is_keyed_by_the_hosts_cpu_features(monkeypatch, tmp_path):
    features = native.cpu_features()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.split(":")[0].strip() in ("flags", "Features"))
        assert set(flags.split(":", 1)[1].split()) <= set(features.split())
    here = kernel.library_path(["g++"], str(tmp_path))
    assert here == kernel.library_path(["g++"], str(tmp_path))
    monkeypatch.setattr(native, "cpu_features", lambda: features.replace(" avx512f", "") + " other_node")
    there = kernel.library_path(["g++"], str(tmp_path))
    assert there != here and os.path.dirname(there) == os.path.dirname(here)


# -- denormal scores ----------------------------------------------------------------------------------------

DENORMALS = np.array([1e-40, 0.0, -0.0, 5e-41, 1.0, -1e-39, 2e-38], np.float32)  # 2e-38 is normal


def test_denormal_scores_rank_as_zeros():
    assert np.all(np.abs(DENORMALS[[0, 3, 5]]) < np.finfo(np.float32).tiny) and DENORMALS[6] > np.finfo(np.float32).tiny
    keys = np.asarray(_order_preserving_int32(jnp.asarray(DENORMALS)))
    assert np.all(keys[[0, 1, 2, 3, 5]] == 0) and keys[4] > keys[6] > 0
    # the reference: a stable sort of the scores with denormals flushed; ties go to the later index
    flushed = np.where(np.abs(DENORMALS) < np.finfo(np.float32).tiny, 0.0, DENORMALS)
    for k in range(1, DENORMALS.size + 1):
        expected = np.zeros(DENORMALS.size)
        expected[np.argsort(flushed, kind="stable")[-k:]] = 1
        np.testing.assert_array_equal(np.asarray(keep_largest(jnp.asarray(DENORMALS), k)), expected)
    ranks = np.asarray(dynamic._descending_ranks(jnp.asarray(DENORMALS)))
    np.testing.assert_array_equal(ranks, np.argsort(np.argsort(-flushed, kind="stable"), kind="stable"))


def test_the_ranking_key_reads_bits_not_float_comparisons():
    """XLA's CPU runtime reads denormals as zero; a GPU compares them as they are. A key made by
    integer operations on the bits alone is the same on both (a float ``x == 0`` is not)."""
    eqn_types = {str(v.aval.dtype) for eqn in jax.make_jaxpr(_order_preserving_int32)(jnp.asarray(DENORMALS)).eqns
                 if eqn.primitive.name in ("eq", "ne", "lt", "le", "gt", "ge") for v in eqn.invars}
    assert eqn_types <= {"int32"}, eqn_types


# -- the train steps lower for CUDA and TPU -------------------------------------------------------------------

@pytest.mark.parametrize("which", ["imp", "edge_popup"])
def test_train_steps_export_for_cuda_and_tpu(which, digits_imp, digits_edge_popup, monkeypatch):
    """The programs' train steps, traced as each backend traces them (jsnn.conv picks its convolution by
    backend: faked), lower for CUDA and for TPU with no CPU-only call in them."""
    from jsnn import conv
    from jsnn.trainer import make_train_step

    ds, config, model, trainer = digits_imp if which == "imp" else digits_edge_popup
    if which == "imp":
        from jsnn.training_rules import MaskedTraining
        from jsnn.variables import init_variables
        rule, scores = MaskedTraining(), None
        variables = init_variables(model, jax.random.PRNGKey(0), (1,) + ds.image_shape)
    else:
        from tests.test_edge_popup import fresh
        variables, scores, rule = fresh(ds, config, model, 0.5)
    state = trainer.new_state(variables, scores, rule, 0)
    b, stop = config.batch_size, trainer.stop_flags()
    args = (jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), state),
            jax.ShapeDtypeStruct((b,) + ds.image_shape, ds.train_images.dtype),
            jax.ShapeDtypeStruct((b,), ds.train_labels.dtype), jax.ShapeDtypeStruct(stop.shape, stop.dtype))
    assert conv.default_impl() == "tuned"  # the CPU's choice
    monkeypatch.setattr(conv.jax, "default_backend", lambda: "gpu")  # a GPU's and a TPU's choice: XLA's conv
    assert conv.default_impl() == "xla" == conv.default_impl("tpu")
    step = jax.jit(make_train_step(model, rule, trainer.optimizer, ds, ds.augment))
    exported = jax.export.export(step, platforms=["cuda", "tpu"])(*args)  # one module lowered for both
    assert exported.platforms == ("cuda", "tpu")
    text = exported.mlir_module()
    assert "stablehlo.convolution" in text and "lapack" not in text
    assert not [c for c in re.findall(r"custom_call @(\w+)", text) if "cpu" in c.lower()]


# -- benchmarks/gpu_check.py in its CPU mode ---------------------------------------------------------------------

def test_gpu_check_cpu_mode_writes_one_results_file(tmp_path):
    from benchmarks import gpu_check

    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--cpu", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    sections = result["sections"]
    assert list(sections) == ["versions", "platform", "determinism", "parity", "sparse", "steps", "sweeps",
                              "presets", "memory"]  # the order
    assert sections["versions"]["packages"]["jax"] == jax.__version__
    assert sections["platform"]["platform"] == "cpu" and sections["platform"]["flags_together"] == {"accepted": True}
    default = sections["determinism"]["default"]
    assert default["rerun_identical"] and default["resume_identical"] and default["steps"] == 4
    parity = sections["parity"]["f32"]  # the CPU against itself: nothing may differ
    assert set(parity["flips_per_layer"]) == {"conv1", "conv2", "fc"} and not any(parity["flips_per_layer"].values())
    assert sections["presets"]["imp"]["images"] == 32 and sections["memory"]["host_peak_rss_mb"] > 0
    # what the CPU mode leaves to the GPU is recorded, not dropped
    assert {n.split(":")[0] for n in result["not_run"]} == {"sparse", "steps", "sweeps"}
    assert all(sections[n]["status"].startswith("not run in --cpu mode") for n in ("sparse", "steps", "sweeps"))


# -- the speed benchmark on a GPU host (CUDA faked) -------------------------------------------------------------

def test_throughput_uses_the_gpu_where_found_and_synchronises(monkeypatch):
    torch = pytest.importorskip("torch")
    from benchmarks import common, throughput
    from benchmarks.peers import torch_common

    monkeypatch.delenv("JAX_PLATFORMS", raising=False)
    assert "JAX_PLATFORMS" not in throughput.child_env(2, "jsnn")  # JAX's default backend: the GPU if found
    assert throughput.child_env(2, "jsnn", "cpu")["JAX_PLATFORMS"] == "cpu"
    assert throughput.parse(["--device", "cpu"]).device == "cpu" and throughput.parse([]).device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_common.device_of(common.Case("torch")).type == "cuda"
    assert torch_common.device_of(common.Case("torch", device="cpu")).type == "cpu"
    waited = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    torch_common.synchronizer(torch.device("cuda"))(None)  # the clock stops after the GPU's work
    torch_common.synchronizer(torch.device("cpu"))(None)
    assert waited == [torch.device("cuda")]
    try:
        from benchmarks.peers import spikingjelly_impl
    except ImportError:
        return
    assert spikingjelly_impl.neuron_kernel(False) == "torch"  # the CPU as before: its Python loop over T
    kernel = spikingjelly_impl.neuron_kernel(True)
    if kernel == "fused":  # SpikingJelly 2.x: its CUDA kernels exist for the triangle, not for the rectangle
        from spikingjelly._ops.surrogate import _surrogate_spec
        assert _surrogate_spec(spikingjelly_impl.LIF(2, "fused").node.surrogate_function) is not None
        assert _surrogate_spec(spikingjelly_impl.LIF(2, "torch").node.surrogate_function) is None
    else:  # 0.0.0.0.x: backend="cupy" where CuPy is installed
        assert kernel == ("cupy" if importlib.util.find_spec("cupy") else "torch")
