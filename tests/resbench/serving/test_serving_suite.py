"""The `serving:` suite key: validated like the rest (one line naming the key, the bad value and the
allowed values), expanded into one case per (model, dtype, runtime, scenario) after the latency cases."""

from __future__ import annotations

import pytest
from test_suite import error_of  # tests/resbench/test_suite.py: one checker of one-line suite errors

from resbench.suite import expand, parse_suite

GOOD = """
name: t
models: [resnet18]
backends: [eager, onnxruntime]
batch_sizes: [1, 2]
dtypes: [fp32]
"""


@pytest.mark.parametrize("serving, expected", [
    ("{scenarios: [sever]}", ["serving.scenarios[0]", "'single-stream'", "'server'", "'offline'", "sever"]),
    ("{scenarios: []}", ["serving.scenarios", "must not be empty"]),
    ("{scenarios: [server, server]}", ["serving", "name a scenario twice"]),
    ("{target_qps: 100, find_peak: true}", ["serving", "target_qps (100) and find_peak: true exclude each other"]),
    ("{target_qps: 0}", ["serving.target_qps", "greater than 0", "got 0"]),
    ("{max_batch: 0}", ["serving.max_batch", "greater than or equal to 1", "got 0"]),
    ("{max_wait_ms: -1}", ["serving.max_wait_ms", "got -1"]),
    ("{duration_s: 0}", ["serving.duration_s", "got 0"]),
    ("{compliant: true, duration_s: 10}", ["serving", "duration_s is a quick-mode floor", "compliant: true"]),
    ("{compliant: true, server_latency_ms: 20}", ["serving", "server_latency_ms 20", "15 ms"]),
    ("{latency_ms: 15}", ["serving.latency_ms", "unknown key 'latency_ms'", "server_latency_ms", "find_peak"]),
    ("fast", ["serving", "valid dictionary", "got 'fast'"]),
])
def test_bad_serving_block_is_one_line(serving: str, expected: list[str]) -> None:
    message = error_of(GOOD + f"serving: {serving}\n")
    for part in expected:
        assert part in message, (part, message)


def test_cpu_serving_needs_a_serving_block_and_is_validated_merged() -> None:
    assert "add `serving:`" in error_of(GOOD + "cpu: {serving: {duration_s: 1}}\n")
    message = error_of(GOOD + "serving: {find_peak: true}\ncpu: {serving: {target_qps: 5}}\n")
    assert "cpu.serving" in message and "exclude each other" in message
    assert "unknown key 'scenarios'" in error_of(GOOD + "serving: {}\ncpu: {serving: {scenarios: [server]}}\n")


def test_defaults_are_quick_mode_with_a_peak_search_on_every_scenario() -> None:
    serving = parse_suite(GOOD + "serving: {}\n").serving
    assert serving.scenarios == ["single-stream", "server", "offline"]
    assert not serving.compliant and serving.peak_search and serving.server_latency_ms == 15.0
    assert parse_suite(GOOD + "serving: {target_qps: 50}\n").serving.peak_search is False


def test_serving_cases_follow_the_latency_cases_one_per_runtime_and_scenario() -> None:
    suite = parse_suite(GOOD + "serving: {scenarios: [single-stream, server], max_batch: 4}\n"
                               "cpu: {serving: {duration_s: 0.5, max_batch: 2}}\n")
    cases = expand(suite, "cpu")
    latency, serving = cases[:4], cases[4:]
    assert all(c.scenario is None for c in latency)
    assert [(c.backend, c.scenario, c.batch_size) for c in serving] == [
        ("eager", "single-stream", 1), ("eager", "server", 2),
        ("onnxruntime", "single-stream", 1), ("onnxruntime", "server", 2)]
    assert serving[0].serving.min_duration_s == 0.5  # cpu.serving applied
    assert len({c.identity for c in cases}) == len(cases)
    assert serving[1].identity[-1] == "server" and serving[1].identity[2] is None  # batch is not identity
    assert len({c.group_key for c in serving}) == 2  # one worker per runtime
