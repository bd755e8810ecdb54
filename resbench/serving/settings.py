"""LoadGen TestSettings for one run: MLPerf's ResNet-50 rules, then (quick mode) resbench's floors.

Every run starts from LoadGen's built-in mlperf.conf for "resnet50" (`FromConfig(..., conf_type=0)`):
SingleStream reports p90 latency, Server holds p99 <= 15 ms, Offline reports samples/s, 600 s minimum
duration, Offline at least 24,576 samples, 1,024 performance samples, and MLPerf's seeds.
- `compliant: true` keeps those rules; resbench sets only what a submitter sets: the scenario, the mode,
  and the schedule hints (expected SingleStream latency, Offline QPS, the Server target QPS).
- quick mode (the default) replaces the run length: min_duration = `duration_s`, min_query_count =
  `min_queries` (Offline: samples), and the performance sample count = the QSL's size. LoadGen then
  marks most runs INVALID ("min duration", "early stopping" not satisfied): that is its verdict on a short
  run, recorded in the row, not an error.

The hints matter even in quick mode: LoadGen pre-generates its query schedule from them (too few queries
and it runs out, mlcommons/inference#1566), so they come from the runtime's measured latency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from resbench.suite import ServingConfig

MLPERF_MODEL = "resnet50"               # the only MLPerf image-classification benchmark
MLPERF_CONF = 0                         # FromConfig's conf_type for the built-in mlperf.conf
QUICK_SAMPLES = 256                     # QSL images in quick mode (MLPerf: 1,024)
COMPLIANT_SAMPLES = 1024                # MLPerf ResNet-50's performance sample count
SCENARIO_NAMES = {"single-stream": "SingleStream", "server": "Server", "offline": "Offline"}


@dataclass(frozen=True)
class Hints:
    """What LoadGen needs to build its schedule, from the runtime's measured latency."""

    single_stream_latency_s: float = 0.01     # one sample at batch 1
    offline_qps: float = 100.0                # samples/s at the offline batch
    server_qps: float = 100.0                 # the Server schedule's target


def qsl_size(cfg: ServingConfig) -> int:
    return COMPLIANT_SAMPLES if cfg.compliant else QUICK_SAMPLES


def test_settings(lg: Any, scenario: str, cfg: ServingConfig, hints: Hints, *, accuracy: bool = False,
                  quick: bool | None = None, min_queries: int | None = None) -> Any:
    """A `lg.TestSettings` for one run. `quick` overrides the config's mode (the peak search's probes are
    quick even for a compliant row), `min_queries` its query floor (a probe's is capped, peak.py);
    `accuracy` runs LoadGen's AccuracyOnly mode (every QSL sample once)."""
    quick = (not cfg.compliant) if quick is None else quick
    settings = lg.TestSettings()
    name = SCENARIO_NAMES[scenario]
    status = settings.FromConfig("", MLPERF_MODEL, name, MLPERF_CONF)
    if status != 0:
        raise RuntimeError(f"LoadGen could not load its built-in rules for {MLPERF_MODEL} {name} (status {status})")
    settings.scenario = getattr(lg.TestScenario, name)
    settings.mode = lg.TestMode.AccuracyOnly if accuracy else lg.TestMode.PerformanceOnly
    if quick:
        settings.min_duration_ms = int(round(cfg.min_duration_s * 1000))
        settings.max_duration_ms = 0
        settings.min_query_count = cfg.min_query_count if min_queries is None else min_queries
        settings.max_query_count = 0
        settings.performance_sample_count_override = qsl_size(cfg)
    settings.single_stream_expected_latency_ns = max(1, int(hints.single_stream_latency_s * 1e9))
    settings.offline_expected_qps = hints.offline_qps
    settings.server_target_qps = hints.server_qps
    settings.server_target_latency_ns = int(round(cfg.server_latency_ms * 1e6))
    settings.server_target_latency_percentile = 0.99
    return settings

