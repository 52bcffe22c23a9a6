"""The benchmark harness runs end to end in its --quick form (no peers needed) and reports a missing peer."""
import json

from benchmarks import common, throughput


def test_quick_run_writes_json_markdown_png(tmp_path):
    rc = throughput.main(["--quick", "--impls", "jsnn,jsnn_bare", "--modes", "infer", "--results-dir", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "quick.json").read_text())
    assert [r["status"] for r in data["records"]] == ["ok"] * 2
    assert all(r["images_per_s"] > 0 and r["peak_rss_delta_mb"] >= 0 for r in data["records"])
    assert "matmul_gflops" in data["meta"]["noise"]
    md = (tmp_path / "quick.md").read_text()
    assert "| vgg_small | 2 | 2 | jsnn |" in md and "programs' step / bare step" in md
    assert (tmp_path / "quick.png").stat().st_size > 0


def test_missing_peer_is_reported_not_dropped(monkeypatch):
    monkeypatch.setitem(throughput.IMPLS, "nolib", ("benchmarks.peers.no_such_library", "a peer not installed"))
    record = throughput.run_child(common.Case("nolib", steps=1))
    assert record["status"] == "missing" and "no_such_library" in record["error"]


def test_peers_resnet19_is_jsnns():
    from jsnn.models import SpikingResNet

    assert common.RESNET19 == dict(stem=SpikingResNet.stem_features, stages=tuple(SpikingResNet.stage_features),
                                   blocks=tuple(SpikingResNet.stage_blocks), hidden=SpikingResNet.hidden_features)


def test_train_flops_of_workload_a():
    # about 183 GFLOP per training batch of 32 at T = 5 (forward and backward of vgg_small)
    assert abs(common.train_flops("vgg_small", 32, 5) / 1e9 - 183) < 5


def test_child_environments_set_the_xla_flags_they_claim(monkeypatch):
    from jsnn.xla_flags import CPU_CONV_FLAG

    monkeypatch.setenv("XLA_FLAGS", f"{CPU_CONV_FLAG} --xla_cpu_enable_fast_math=false")  # as if exported
    assert throughput.JSNN_CPU_CONV_FLAG == CPU_CONV_FLAG
    assert throughput.child_env(2, "spyx_eigen")["XLA_FLAGS"].split()[0] == CPU_CONV_FLAG
    assert throughput.child_env(2, "jsnn_ynn")["JSNN_KEEP_XLA_FLAGS"] == "1"
    assert "ynn" not in throughput.child_env(2, "jsnn_ynn")["XLA_FLAGS"]
    for impl in throughput.IMPLS:  # XLA stops reading XLA_FLAGS at the first token that is not a --flag
        assert all(tok.startswith("--") for tok in throughput.child_env(2, impl)["XLA_FLAGS"].split())


def test_programs_step_computes_the_benchmarks_network():
    """The timed programs' step (benchmarks/trainer_impl.py) and the bare step (jsnn_impl.py) that the
    peers are checked against compute the same update, once augmentation, normalization, weight
    decay and the schedule are set to nothing."""
    import dataclasses

    import jax
    import numpy as np

    from benchmarks import jsnn_impl, trainer_impl
    from jsnn import data as jdata
    from jsnn import parallel
    from jsnn.models import build_model
    from jsnn.trainer import Trainer
    from jsnn.training_rules import MaskedTraining
    from jsnn.variables import init_variables

    case = common.Case("jsnn", "vgg_small", "train", batch=2, timesteps=2)
    config = dataclasses.replace(trainer_impl.program_config(case, "imp"), weight_decay=0.0, schedule="constant",
                                 lr=common.LR)
    data = dataclasses.replace(trainer_impl.synthetic_cifar(case.batch), mean=(0.0,) * 3, std=(1.0,) * 3,
                               augment=jdata.AugmentConfig())
    model = build_model(config, data.num_classes)
    variables = init_variables(model, jax.random.PRNGKey(0), (1,) + data.image_shape)
    images, labels = data.train_images[:2], data.train_labels[:2]

    trainer = Trainer(config, model, data)
    train_step = trainer.jitted_steps(MaskedTraining())[0]
    state = trainer.new_state(variables, None, MaskedTraining(), 0)
    state, m = train_step(state, *parallel.put_batch(trainer.mesh, images, labels), trainer.stop_flags())

    bare_model = jsnn_impl.build_model(case, dense=False)
    bare_step, _, opt_state = jsnn_impl.make_steps(bare_model, variables)
    bare, _, loss = bare_step(jax.tree.map(np.array, variables), opt_state, images.astype(np.float32), labels)

    np.testing.assert_allclose(float(m["loss"]), float(loss), rtol=1e-6)
    for ours, theirs in ((state.weights, bare.weights), (state.bn, bare.bn), (state.batch_stats, bare.batch_stats)):
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_event_conv_quick_run_and_its_crossover(tmp_path):
    from benchmarks import event_conv as bench

    bench.main(["--quick", "--repeats", "1", "--out", str(tmp_path / "ev")])
    data = json.loads((tmp_path / "ev.json").read_text())
    rows = data["layers"][0]["rows"]
    assert [r["density"] for r in rows] == [0.15, 0.6] and data["largest_rel_error"] < 1e-5
    assert all(r["event_forward_ms"] > 0 and r["xla_filter_grad_ms"] > 0 for r in rows)
    # the highest density up to which the kernel won at every density
    won = lambda *speedups: [{"density": d, "s": s} for d, s in zip((0.1, 0.3, 0.5), speedups)]  # noqa: E731
    assert [bench.crossover(won(*s), "s") for s in ((2, 1.5, 1.2), (2, 0.9, 1.2), (0.9, 2, 2))] == [0.5, 0.1, None]
    assert data["layers"][0]["forward_wins_up_to"] == bench.crossover(rows, "forward_speedup")
