"""The benchmark harness runs end to end in its --quick form (no peers needed) and reports a missing peer."""
import json

from benchmarks import common, throughput


def test_quick_run_writes_json_markdown_png(tmp_path):
    rc = throughput.main(["--quick", "--impls", "jsnn,dense", "--modes", "infer", "--results-dir", str(tmp_path)])
    assert rc == 0
    data = json.loads((tmp_path / "quick.json").read_text())
    assert [r["status"] for r in data["records"]] == ["ok", "ok"]
    assert all(r["images_per_s"] > 0 and r["peak_rss_delta_mb"] >= 0 for r in data["records"])
    assert "matmul_gflops" in data["meta"]["noise"]
    md = (tmp_path / "quick.md").read_text()
    assert "| vgg_small | 2 | 2 | jsnn |" in md and "SNN step / dense-bound step" in md
    assert (tmp_path / "quick.png").stat().st_size > 0


def test_missing_peer_is_reported_not_dropped(monkeypatch):
    monkeypatch.setitem(throughput.IMPLS, "nolib", ("benchmarks.peers.no_such_library", "a peer not installed"))
    record = throughput.run_child(common.Case("nolib", steps=1))
    assert record["status"] == "missing" and "no_such_library" in record["error"]


def test_train_flops_of_workload_a():
    # SPEC/issue: about 183 GFLOP per training batch of 32 at T = 5
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
