"""LoadGen settings (quick floors vs MLPerf's ResNet-50 rules) and the runner's serving plan (log folders,
the offline batch chosen from the latency rows)."""

from __future__ import annotations

from pathlib import Path

import pytest

from resbench.results import ResultRow
from resbench.serving import plan, settings
from resbench.stats import summarize
from resbench.suite import ServingConfig, expand, parse_suite

SUITE = """
name: t
models: [resnet18]
backends: [eager, {name: compile, mode: max-autotune}]
batch_sizes: [1, 8, 32]
dtypes: [fp32, fp16]
serving: {scenarios: [offline], max_batch: 4}
"""


@pytest.mark.usefixtures("loadgen_installed")
def test_compliant_keeps_mlperf_rules_and_quick_mode_replaces_the_run_length() -> None:
    import mlperf_loadgen as lg

    hints = settings.Hints(single_stream_latency_s=0.002, offline_qps=500.0, server_qps=80.0)
    compliant = settings.test_settings(lg, "offline", ServingConfig(compliant=True), hints)
    assert compliant.min_duration_ms == 600_000 and compliant.min_query_count == 24_576
    assert compliant.performance_sample_count_override == 1024
    assert compliant.offline_expected_qps == 500.0
    server = settings.test_settings(lg, "server", ServingConfig(compliant=True), hints)
    assert server.server_target_latency_ns == 15_000_000 and server.server_target_qps == 80.0
    quick = settings.test_settings(lg, "single-stream", ServingConfig(duration_s=2, min_queries=50), hints)
    assert (quick.min_duration_ms, quick.min_query_count) == (2000, 50)
    assert quick.performance_sample_count_override == settings.QUICK_SAMPLES
    assert quick.single_stream_expected_latency_ns == 2_000_000
    assert quick.mode == lg.TestMode.PerformanceOnly and quick.scenario == lg.TestScenario.SingleStream
    probe = settings.test_settings(lg, "server", ServingConfig(compliant=True), hints, quick=True, min_queries=7)
    assert (probe.min_duration_ms, probe.min_query_count) == (5000, 7)  # a compliant row's probes are quick


def latency_row(backend: str, batch: int, ips: float, dtype: str = "fp32", status: str = "ok",
                options: dict | None = None) -> ResultRow:
    samples = [batch / ips * 1e3] * 5 if status == "ok" else []
    return ResultRow(model="resnet18", backend=backend, options=options or {}, batch_size=batch, dtype=dtype,
                     image_size=224, memory_format="channels_last", timing_mode="device", device="cpu",
                     status=status, reason=None if status == "ok" else "why", samples_ms=samples,
                     latency_ms=summarize(samples) if samples else None, throughput_ips=ips if status == "ok" else None)


def test_offline_serves_at_the_runtime_fastest_latency_batch_and_logs_beside_the_run_file() -> None:
    cases = [c for c in expand(parse_suite(SUITE), "cpu") if c.scenario]
    rows = [latency_row("eager", 1, 100), latency_row("eager", 8, 700), latency_row("eager", 32, 650),
            latency_row("eager", 32, 9000, dtype="fp16"), latency_row("eager", 4, 9000, status="failed"),
            latency_row("compile", 1, 300, options={"mode": "max-autotune"})]
    planned = plan.prepare_cases(cases, rows, Path("runs/x/20261130.json"))
    by_runtime = {(c.backend_label, c.dtype): c for c in planned}
    eager = by_runtime["eager", "fp32"]
    assert eager.batch_size == 8 and "batch 8: the highest throughput (700.0 img/s)" in eager.serving_note
    assert by_runtime["eager", "fp16"].batch_size == 32
    assert by_runtime["compile[mode=max-autotune]", "fp32"].batch_size == 1
    assert by_runtime["compile[mode=max-autotune]", "fp16"].batch_size == 4  # no latency row: max_batch
    assert by_runtime["compile[mode=max-autotune]", "fp16"].serving_note is None
    assert eager.loadgen_dir == str(Path("runs/x/20261130.loadgen").resolve() / "resnet18_eager_fp32_offline")
    assert Path(by_runtime["compile[mode=max-autotune]", "fp32"].loadgen_dir).name == \
        "resnet18_compile-mode=max-autotune_fp32_offline"
    assert {c.identity for c in planned} == {c.identity for c in cases}  # the batch is not identity
