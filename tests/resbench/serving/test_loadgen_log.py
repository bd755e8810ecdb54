"""Reading LoadGen's own files: the summary (figures, verdict, unmet conditions) and the accuracy log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resbench.serving.loadgen_log import parse_summary, read_accuracy, read_summary

# Written by mlcommons-loadgen 6.0.17 (a Server run at 5x a SUT's capacity), abridged after the parameters.
SERVER_MISSED = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : Server
Mode     : PerformanceOnly
Completed samples per second    : 379.84
Result is : INVALID
  Performance constraints satisfied : NO
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: NO
Recommendations:
 * Reduce target QPS to improve latency.
Early Stopping Result:
 * Run unsuccessful.
 * Processed 2068 queries.
 * Would need to run at least 215404 more queries,
 with the run being successful if every additional
 query were under latency.

================================================
Additional Stats
================================================
Scheduled samples per second : 2066.60
Min latency (ns)                : 10294542
Max latency (ns)                : 4442578433
Mean latency (ns)               : 2211351809
50.00 percentile latency (ns)   : 2203799825
90.00 percentile latency (ns)   : 3997171406
95.00 percentile latency (ns)   : 4219630236
97.00 percentile latency (ns)   : 4310083106
99.00 percentile latency (ns)   : 4397833540
99.90 percentile latency (ns)   : 4441544806

================================================
Test Parameters Used
================================================
samples_per_query : 1
target_qps : 2000
target_latency (ns): 15000000
min_duration (ms): 1000
min_query_count : 50
"""

SINGLE_STREAM = """================================================
MLPerf Results Summary
================================================
SUT name : PySUT
Scenario : SingleStream
Mode     : PerformanceOnly
90.0th percentile latency (ns) : 2310325
Result is : VALID
  Min duration satisfied : Yes
  Min queries satisfied : Yes
  Early stopping satisfied: Yes
Early Stopping Result:
 * Processed at least 64 queries (416).
 * Would discard 26 highest latency queries.
 * Early stopping 90.0th percentile estimate: 2875506
 * Not enough queries processed for 99.0th percentile
 early stopping estimate (would need to process at
 least 662 total queries).

================================================
Additional Stats
================================================
QPS w/ loadgen overhead         : 414.53
QPS w/o loadgen overhead        : 415.58

Min latency (ns)                : 2042400
90.00 percentile latency (ns)   : 2310325
99.00 percentile latency (ns)   : 5939126
"""


def test_server_summary_verdict_unmet_conditions_and_figures() -> None:
    summary = parse_summary(SERVER_MISSED)
    assert summary.scenario == "Server" and summary.result == "INVALID"
    assert summary.unmet == ["Performance constraints satisfied : NO", "Early stopping satisfied: NO"]  # verbatim
    assert summary.constraints_met is False
    assert summary.blocks["Recommendations"] == ["Reduce target QPS to improve latency."]
    assert summary.blocks["Early Stopping Result"][-1] == ("Would need to run at least 215404 more queries, with "
                                                           "the run being successful if every additional query "
                                                           "were under latency.")
    assert summary.throughput == 379.84
    assert summary.latency_ms()["p99"] == pytest.approx(4397.83354)
    assert summary.number("target_qps") == 2000 and summary.number("min_duration (ms)") == 1000


def test_single_stream_summary_reads_its_qps_and_early_stopping_estimate() -> None:
    summary = parse_summary(SINGLE_STREAM)
    assert summary.result == "VALID" and summary.unmet == [] and summary.constraints_met is None
    assert summary.throughput == 415.58  # without LoadGen's overhead
    assert summary.early_stopping_ms == pytest.approx(2.875506)
    assert summary.ms("90.0th percentile latency (ns)") == pytest.approx(2.310325)
    assert summary.latency_ms()["p95"] is None  # not in this abridged file: None, never a guess


def test_a_summary_without_a_result_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "mlperf_log_summary.txt").write_text("")
    with pytest.raises(RuntimeError, match="LoadGen wrote no result"):
        read_summary(tmp_path)


def test_accuracy_log_holds_each_response_as_little_endian_int64(tmp_path: Path) -> None:
    entries = [{"seq_id": 0, "qsl_idx": 3, "data": (7).to_bytes(8, "little").hex().upper()},
               {"seq_id": 1, "qsl_idx": 0, "data": (-1).to_bytes(8, "little", signed=True).hex().upper()},
               {"seq_id": 2, "qsl_idx": 3, "data": (9).to_bytes(8, "little").hex().upper()}]
    (tmp_path / "mlperf_log_accuracy.json").write_text(json.dumps(entries))
    assert read_accuracy(tmp_path) == {3: [7, 9], 0: [-1]}
