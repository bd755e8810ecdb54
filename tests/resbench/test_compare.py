"""The regression gate: verdicts from raw samples, exit codes, and the statistics behind them.

Rows carry synthetic raw samples drawn from a seeded RNG (lognormal around a median), so every test is
deterministic while still exercising real noise."""

from __future__ import annotations

import numpy as np
import pytest

from resbench.compare import (
    Verdict,
    bootstrap_delta_ci,
    compare_files,
    compare_runs,
    decide,
    mann_whitney_u,
    parse_fail_on,
    smallest_p_value,
    thresholds_from_specs,
)
from resbench.errors import ResbenchError, RunFileError, UsageError
from resbench.report.comparison import render_markdown
from resbench.results import Memory, Parity, ResultRow, RunFile
from resbench.stats import summarize
from resbench.telemetry import ClockSample
from resbench.telemetry import summarize as summarize_clocks

ENV = {"resbench": "0.1.0", "git_sha": "aaaa", "created": "2025-01-01T00:00:00+00:00", "device": "Test GPU",
       "driver": "560.35", "torch": "2.13.0"}


def samples(median_ms: float, cv: float, n: int, seed: int) -> list[float]:
    return list(median_ms * np.random.default_rng(seed).lognormal(0.0, cv, n))


def row(model: str = "resnet50", backend: str = "eager", batch: int = 1, median_ms: float = 10.0,
        cv: float = 0.02, n: int = 50, seed: int = 0, status: str = "ok", **overrides) -> ResultRow:
    fields = dict(model=model, backend=backend, batch_size=batch, dtype="bf16", image_size=224,
                  memory_format="channels_last", timing_mode="device", device="cuda", status=status)
    if status == "ok":
        raw = overrides.pop("samples_ms", None) or samples(median_ms, cv, n, seed)
        fields.update(samples_ms=raw, latency_ms=summarize(raw),
                      throughput_ips=batch / (np.median(raw) * 1e-3))
    else:
        fields["reason"] = "boom"
    fields.update(overrides)
    return ResultRow(**fields)


def run(rows: list[ResultRow], **env) -> RunFile:
    return RunFile(env={**ENV, **env}, suite={"name": "gate"}, rows=rows)


def matrix(seed: int, slow: dict[tuple[str, str, int], float] | None = None, cv: float = 0.02,
           n: int = 50) -> RunFile:
    """Eight cases (2 models x 2 backends x 2 batches); `slow` scales the named cases' latency."""
    rows = []
    for i, (model, backend, batch) in enumerate((m, b, bs) for m in ("resnet18", "resnet50")
                                                for b in ("eager", "compile") for bs in (1, 32)):
        factor = (slow or {}).get((model, backend, batch), 1.0)
        rows.append(row(model, backend, batch, median_ms=(2.0 + i) * factor, cv=cv, n=n, seed=seed * 100 + i))
    return run(rows)


# ------------------------------------------------------------------------------------------ the gate


def test_identical_runs_never_fail():
    for cv in (0.01, 0.05, 0.3):
        base = matrix(seed=1, cv=cv)
        comparison = compare_runs(base, base)
        assert comparison.exit_code == 0
        assert all(c.verdict in (Verdict.SAME, Verdict.AMBIGUOUS) for c in comparison.cases)
        if cv <= 0.05:
            assert all(c.verdict is Verdict.SAME for c in comparison.cases), comparison.summary


def test_twenty_percent_slowdown_of_one_case_always_fails_and_is_named():
    for seed in range(20):
        base = matrix(seed=seed)
        cand = matrix(seed=seed + 1000, slow={("resnet50", "compile", 32): 1.2})
        comparison = compare_runs(base, cand)
        slower = [c for c in comparison.cases if c.verdict is Verdict.SLOWER]
        assert [c.identity[:3] for c in slower] == [("resnet50", "compile", 32)], comparison.summary
        assert comparison.exit_code == 1
        assert "resnet50 compile b32 bf16" in comparison.summary
        assert "resnet50 compile b32 bf16" in render_markdown(comparison)


def test_equal_but_noisy_runs_stay_same_or_ambiguous():
    for seed in range(30):
        base = matrix(seed=seed, cv=0.10, n=30)
        cand = matrix(seed=seed + 500, cv=0.10, n=30)
        comparison = compare_runs(base, cand)
        verdicts = {c.verdict for c in comparison.cases}
        assert verdicts <= {Verdict.SAME, Verdict.AMBIGUOUS}, comparison.summary
        assert comparison.exit_code == 0


def test_faster_does_not_fail():
    base = matrix(seed=3)
    cand = matrix(seed=4, slow={("resnet18", "eager", 1): 0.7})
    comparison = compare_runs(base, cand)
    assert comparison.exit_code == 0
    assert comparison.count(Verdict.FASTER) == 1


def test_small_shift_is_same_not_slower():
    """A significant but small (2%) shift is inside the 5% band: SAME."""
    base = run([row(median_ms=10.0, cv=0.005, n=400, seed=1)])
    cand = run([row(median_ms=10.2, cv=0.005, n=400, seed=2)])
    case = compare_runs(base, cand).cases[0]
    assert case.verdict is Verdict.SAME
    assert case.primary.p_value < 0.002


def test_a_candidate_slower_in_every_sample_never_passes_however_few_samples():
    """The probe: the candidate 64-75x slower, n=2 a side (max_time_s ran out): it used to PASS as AMBIGUOUS."""
    base = run([row(samples_ms=[1.00, 1.02], seed=1)])
    cand = run([row(samples_ms=[64.0, 75.0], seed=2)])
    comparison = compare_runs(base, cand)
    case = comparison.cases[0]
    assert case.verdict is Verdict.SLOWER and comparison.exit_code == 1
    assert "every candidate sample is more than 5% slower" in case.notes[0]
    assert compare_runs(base, cand, allow_insufficient=True).exit_code == 1   # decisive, not insufficient
    # however few: one sample a side, or a throttled candidate (no clock excuses a 64x slowdown)
    one = compare_runs(run([row(samples_ms=[1.0])]), run([row(samples_ms=[2.0], telemetry={"throttled": True})]))
    assert one.cases[0].verdict is Verdict.SLOWER and one.exit_code == 1


BUSY = "machine busy: other processes used 1.0 of 2 cores while measured (allowed 0.2)"


def busy(r: ResultRow) -> ResultRow:
    """The row as measured under contention (what measure.py records when others took its cores)."""
    return r.model_copy(update={"system": {"contended": True, "other_cores": 1.0}, "warnings": [BUSY]})


def test_a_busy_baseline_cannot_pass_a_candidate():
    """Contention only slows a measurement: a baseline measured busy reads slow, so a candidate 20% slower
    than the true baseline read SAME against it and passed. Such a case is not judged (INSUFFICIENT, fails
    unless --allow-insufficient); a SLOWER verdict stands; a busy candidate that still reads SAME passes."""
    true_base = row(median_ms=10.0, seed=1)
    slowed_base = busy(row(median_ms=12.0, seed=1))          # the same runtime, slowed 20% by a neighbour
    regressed = row(median_ms=12.0, seed=2)                  # 20% slower than the true baseline
    assert compare_runs(run([true_base]), run([regressed])).cases[0].verdict is Verdict.SLOWER
    hidden = compare_runs(run([slowed_base]), run([regressed]))
    (case,) = hidden.cases
    assert case.verdict is Verdict.INSUFFICIENT and case.primary.verdict is Verdict.SAME
    assert case.notes[-1].startswith(f"baseline measured under contention ({BUSY})")
    assert hidden.exit_code == 1 and "a baseline measured under contention" in hidden.summary
    assert compare_runs(run([slowed_base]), run([regressed]), allow_insufficient=True).exit_code == 0
    # a regression beyond the busy baseline is still a regression
    worse = compare_runs(run([slowed_base]), run([row(median_ms=20.0, seed=3)]))
    assert worse.cases[0].verdict is Verdict.SLOWER and worse.exit_code == 1
    # a busy candidate that still reads SAME against a quiet baseline is at least that fast
    calm = compare_runs(run([true_base]), run([busy(row(median_ms=10.0, seed=4))]))
    assert calm.cases[0].verdict is Verdict.SAME and calm.exit_code == 0


def test_too_few_samples_to_decide_is_insufficient_and_fails_unless_allowed():
    base = run([row(samples_ms=[10.0, 10.4, 9.8], seed=1)])
    cand = run([row(samples_ms=[10.1, 12.0, 13.0], seed=2)])    # overlapping: no separation to go by
    comparison = compare_runs(base, cand)
    case = comparison.cases[0]
    assert case.verdict is Verdict.INSUFFICIENT and "too few samples to decide (n=3 vs 3)" in case.notes[0]
    assert comparison.exit_code == 1 and "too few samples to judge" in comparison.summary
    allowed = compare_runs(base, cand, allow_insufficient=True)
    assert allowed.exit_code == 0 and allowed.summary.startswith("PASS (1 INSUFFICIENT allowed")
    assert "INSUFFICIENT" in render_markdown(comparison)


def test_the_sample_floor_follows_the_bonferroni_level():
    """7 a side can reach p < 0.002 for one case (exact p = 2/3432), but not for eight cases (alpha 0.00025):
    with eight cases such a comparison is INSUFFICIENT, not a silent AMBIGUOUS pass."""
    assert smallest_p_value(7, 7) == pytest.approx(2 / 3432)
    one = compare_runs(run([row(n=7, seed=1)]), run([row(n=7, median_ms=10.3, seed=2)]))
    assert one.cases[0].verdict is not Verdict.INSUFFICIENT
    eight = compare_runs(matrix(seed=1, n=7), matrix(seed=2, n=7))
    assert {c.verdict for c in eight.cases} == {Verdict.INSUFFICIENT} and eight.exit_code == 1


def test_median_threshold_is_configurable():
    base = run([row(median_ms=10.0, cv=0.005, n=200, seed=1)])
    cand = run([row(median_ms=10.4, cv=0.005, n=200, seed=2)])
    assert compare_runs(base, cand, thresholds_from_specs([])).cases[0].verdict is Verdict.SAME
    tight = compare_runs(base, cand, thresholds_from_specs(["median:2%"]))
    assert tight.cases[0].verdict is Verdict.SLOWER and tight.exit_code == 1


def test_p99_gate_catches_a_tail_regression_the_median_misses():
    rng = np.random.default_rng(7)
    base_samples = list(10 * rng.lognormal(0, 0.01, 2000))
    tail = list(10 * rng.lognormal(0, 0.01, 2000))
    tail[::25] = [30.0] * len(tail[::25])      # 4% of calls take 3x as long
    base, cand = run([row(samples_ms=base_samples)]), run([row(samples_ms=tail)])
    assert compare_runs(base, cand).exit_code == 0
    gated = compare_runs(base, cand, thresholds_from_specs(["p99:10%"]))
    case = gated.cases[0]
    assert {m.metric: m.verdict for m in case.metrics} == {"median": Verdict.SAME, "p99": Verdict.SLOWER}
    assert gated.exit_code == 1 and "p99" in case.regressions[0]


def test_p99_gate_needs_enough_samples():
    base, cand = run([row(n=100, seed=1)]), run([row(n=100, median_ms=10.3, seed=2)])
    comparison = compare_runs(base, cand, thresholds_from_specs(["p99:10%"]))
    case = comparison.cases[0]
    p99 = next(m for m in case.metrics if m.metric == "p99")
    assert p99.verdict is Verdict.INSUFFICIENT and "need >= 500" in p99.reason
    assert case.verdict is Verdict.INSUFFICIENT and comparison.exit_code == 1


def test_memory_gate_same_kind_on_both_sides():
    base = run([row(memory=Memory(gpu_process_mb=1000.0, peak_allocated_mb=500.0))])
    grown = run([row(memory=Memory(gpu_process_mb=1200.0, peak_allocated_mb=500.0))])
    assert compare_runs(base, grown).exit_code == 0                      # not gated by default
    gated = compare_runs(base, grown, thresholds_from_specs(["memory:10%"]))
    assert gated.exit_code == 1
    assert gated.cases[0].memory.kind == "gpu_process_mb"
    # the candidate lacks NVML figures: the allocator peak is compared instead, and it did not grow
    partial = run([row(memory=Memory(peak_allocated_mb=505.0))])
    mixed = compare_runs(base, partial, thresholds_from_specs(["memory:10%"]))
    assert mixed.cases[0].memory.kind == "peak_allocated_mb" and mixed.exit_code == 0


def _parity(passed: bool) -> Parity:
    return Parity(reference="fp64", rel_l2=1e-3, max_abs=1e-2, cosine=0.999, sqnr_db=60, top1_agree=1.0,
                  top5_overlap=1.0, err_ratio=1.0, passed=passed, rule="test")


def test_parity_regression_fails_and_a_failing_candidate_reports_no_speedup():
    base = run([row(parity=_parity(True), seed=1)])
    cand = run([row(parity=_parity(False), median_ms=5.0, seed=2)])
    comparison = compare_runs(base, cand)
    case = comparison.cases[0]
    assert case.parity_change == "pass -> FAIL" and comparison.exit_code == 1
    assert case.verdict is Verdict.AMBIGUOUS and "parity" in case.notes[0]
    fixed = compare_runs(cand, base)
    assert fixed.cases[0].parity_change == "fail -> pass"


def test_runs_of_two_device_models_are_refused_not_passed():
    """A CPU run against a GPU run read "warning: environments differ: device ..." and could still PASS: the
    difference is the hardware, which the gate cannot judge."""
    gpu = matrix(seed=1)
    with pytest.raises(RunFileError, match=r"baseline was measured on 'Test GPU' and candidate on 'Intel Xeon'; "
                                           r"a gate compares runs of one device model"):
        compare_runs(gpu, run(matrix(seed=2).rows, device="Intel Xeon"))
    assert compare_runs(gpu, matrix(seed=2)).exit_code == 0  # the same device model: judged


def test_broken_missing_and_new_cases():
    base = run([row("resnet18", seed=1), row("resnet50", seed=2), row("resnet50", "compile", seed=3)])
    cand = run([row("resnet18", status="failed", seed=1), row("resnet50", seed=4),
                row("resnet50", "triton", seed=5)])
    comparison = compare_runs(base, cand)
    verdicts = {c.identity[:2]: c.verdict for c in comparison.cases}
    assert verdicts == {("resnet18", "eager"): Verdict.BROKEN, ("resnet50", "eager"): Verdict.SAME,
                        ("resnet50", "compile"): Verdict.MISSING, ("resnet50", "triton"): Verdict.NEW}
    assert comparison.exit_code == 1
    only_missing = compare_runs(base, run([row("resnet50", seed=4)]))
    assert only_missing.exit_code == 0


def test_skipped_on_both_sides_is_not_a_regression():
    base = run([row(seed=1), row(backend="tensorrt", status="skipped")])
    comparison = compare_runs(base, base)
    assert comparison.cases[1].verdict is Verdict.NOT_RUN and comparison.exit_code == 0



def clocked(sm_mhz: float, **extra) -> dict:
    """A row's telemetry as a GPU run records it (telemetry.summarize over NVML readings at `sm_mhz`)."""
    readings = [ClockSample(t=i * 0.1, sm_mhz=sm_mhz, mem_mhz=2619.0, power_w=400.0, temperature_c=50.0, reasons=0)
                for i in range(10)]
    return {**summarize_clocks(readings, default_sm_mhz=1980.0), **extra}

def test_throttled_row_is_ambiguous():
    base = run([row(seed=1, cv=0.1, n=200)])     # overlapping samples: the throttle may explain the shift
    cand = run([row(median_ms=13, seed=2, cv=0.1, n=200, telemetry={"throttled": True})])
    case = compare_runs(base, cand).cases[0]
    assert case.verdict is Verdict.AMBIGUOUS and "throttled" in case.notes[0]


def test_cycle_space_disagreement_is_ambiguous():
    """20% slower in time, but the SM clock fell 20%: the same number of cycles, so not a code regression."""
    base = run([row(seed=1, cv=0.1, n=200, telemetry=clocked(1980.0))])
    cand = run([row(seed=2, median_ms=12.0, cv=0.1, n=200, telemetry=clocked(1650.0))])
    case = compare_runs(base, cand).cases[0]
    assert case.verdict is Verdict.AMBIGUOUS and "cycles say SAME" in case.notes[0]
    steady = run([row(seed=2, median_ms=12.0, cv=0.1, n=200, telemetry=clocked(1980.0))])
    assert compare_runs(base, steady).cases[0].verdict is Verdict.SLOWER


def test_separation_is_decisive_whatever_the_telemetry_says():
    """Every candidate sample slower by more than the threshold: SLOWER even when throttled or at a lower
    clock (the reason says so); the workflow's rerun in the reverse order filters a one-off clock drop."""
    base = run([row(seed=1, telemetry=clocked(1980.0))])
    cand = run([row(seed=2, median_ms=13.0, telemetry=clocked(1650.0, throttled=True))])
    case = compare_runs(base, cand).cases[0]
    assert case.verdict is Verdict.SLOWER
    assert "candidate throttled" in case.notes[0] and "SM clock 1980 -> 1650 MHz" in case.notes[0]


def test_environment_differences_are_reported():
    base = matrix(seed=1)
    cand = run(list(matrix(seed=2).rows), driver="570.10", git_sha="bbbb", created="later")
    comparison = compare_runs(base, cand)
    assert comparison.env_differences == ("driver: 560.35 -> 570.10",)
    assert "environments differ" in render_markdown(comparison)


def test_start_of_run_load_probe_is_not_an_environment_difference():
    # Every two runs differ in the load probe taken at their start (load average, other processes' cores,
    # the probe's window): those are moments, not the machine or the stack, and each row already carries
    # its own contention record. The thread policy is configuration and still counts.
    def system(load: float, threads: int) -> dict:
        return {"at_start": {"cores": 2, "window_s": 0.5 + load / 100, "other_cores": load, "busy": load > 0.2,
                             "load_avg": [load, load, load]},
                "thread_policy": {"threads": threads}}
    base = run(list(matrix(seed=1).rows), system=system(0.1, 2))
    cand = run(list(matrix(seed=2).rows), system=system(1.6, 2))
    assert compare_runs(base, cand).env_differences == ()
    cand = run(list(matrix(seed=2).rows), system=system(1.6, 1))
    assert compare_runs(base, cand).env_differences == ("system.thread_policy.threads: 2 -> 1",)


# ------------------------------------------------------------------------------------------ input errors


def test_missing_baseline_is_an_error_not_a_pass(tmp_path):
    cand = tmp_path / "cand.json"
    matrix(seed=1).save(cand)
    with pytest.raises(RunFileError) as info:
        compare_files(str(tmp_path / "missing.json"), str(cand))
    assert info.value.exit_code == 2 and "missing.json" in str(info.value)


def test_unreadable_baseline_is_an_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(RunFileError):
        compare_files(str(bad), str(bad))


def test_a_run_compared_with_itself_is_an_error_not_a_pass(tmp_path):
    """`compare run.json run.json` (or through a symlink) exited 0 "PASS": a gate that judged nothing."""
    run = tmp_path / "run.json"
    matrix(seed=1).save(run)
    (tmp_path / "latest.json").symlink_to(run.name)
    for cand in (run, tmp_path / "latest.json"):
        with pytest.raises(UsageError) as info:
            compare_files(str(run), str(cand))
        assert str(info.value) == (f"baseline {str(run)!r} and candidate {str(cand)!r} are the same file; "
                                   f"compare two runs")
        assert info.value.exit_code == 2


def test_runs_without_a_common_case_are_an_error():
    with pytest.raises(RunFileError, match="share no case"):
        compare_runs(run([row("resnet18")]), run([row("resnet50")]))


@pytest.mark.parametrize("spec", ["median", "median:5", "speed:5%", "median:-5%", "median:0%", "p99:x%"])
def test_bad_fail_on_spec_names_the_value_and_the_metrics(spec):
    with pytest.raises(UsageError) as info:
        parse_fail_on(spec)
    message = str(info.value)
    assert repr(spec) in message and "\n" not in message
    assert isinstance(info.value, ResbenchError) and info.value.exit_code == 2
    if "unknown metric" in message or "METRIC:PERCENT" in message:
        assert "median, p90, p95, p99, memory" in message


def test_fail_on_parsing():
    assert parse_fail_on("median:5%") == ("median", 0.05)
    assert parse_fail_on("p99:12.5%") == ("p99", 0.125)
    assert thresholds_from_specs(["memory:10%"]) == {"median": 0.05, "memory": 0.10}
    with pytest.raises(UsageError, match="given twice"):
        thresholds_from_specs(["median:5%", "median:3%"])


# ------------------------------------------------------------------------------------------ statistics


# Known samples and the verdicts they must give (pinned: a change of library, method or rule that moves
# one of them is a change of the gate's behaviour and must be deliberate).
FAST = [10.0, 10.1, 9.9, 10.2, 9.8, 10.05, 9.95, 10.15, 9.85, 10.0]
PINNED = [
    # (baseline, candidate, verdict)
    (FAST, [x * 1.20 for x in FAST], Verdict.SLOWER),        # separated by more than 5%: no test needed
    (FAST, [x * 0.80 for x in FAST], Verdict.FASTER),
    (FAST, [x * 1.01 for x in FAST], Verdict.SAME),          # 1%: significant or not, inside the band
    (FAST, FAST, Verdict.SAME),
    (FAST, [x * (1.0 + 0.3 * ((i % 2) - 0.5)) for i, x in enumerate(FAST)], Verdict.AMBIGUOUS),  # +-15%
    (FAST[:3], [10.1, 12.0, 13.0], Verdict.INSUFFICIENT),
    ([10.0], [10.2], Verdict.INSUFFICIENT),
]


@pytest.mark.parametrize("base, cand, verdict", PINNED)
def test_pinned_verdicts_on_known_samples(base, cand, verdict):
    assert decide(base, cand, "median", 0.05, seed=0).verdict is verdict


def test_pinned_p_values_and_ci():
    """scipy's U test, exact for small untied samples, asymptotic otherwise; the bootstrap CI brackets Δ."""
    assert mann_whitney_u(range(7), range(7, 14)) == pytest.approx(2 / 3432)        # exact: 2 / C(14, 7)
    assert mann_whitney_u([1, 2, 3], [1, 2, 3]) == pytest.approx(1.0)
    # 10 vs 10 with ties: the normal approximation with tie and continuity correction (the value resbench's
    # earlier hand-written test gave, itself checked against scipy)
    assert mann_whitney_u(FAST, [x * 1.01 for x in FAST]) == pytest.approx(0.161183, abs=1e-6)
    decision = decide(FAST, [x * 1.2 for x in FAST] * 2, "median", 0.5, seed=0)   # +20% in a 50% band
    assert decision.verdict is Verdict.SAME and not decision.separated
    assert decision.ci[0] < 0.2 < decision.ci[1] and decision.p_value == pytest.approx(1.1508e-5, rel=1e-3)


def test_identical_samples_give_p_one_and_a_zero_centred_ci():
    x = samples(10, 0.05, 100, 3)
    assert mann_whitney_u(x, x) == pytest.approx(1.0)
    low, high = bootstrap_delta_ci(x, x, "median", seed=0)
    assert low < 0 < high


def test_bootstrap_matches_a_brute_force_bootstrap_of_the_median():
    rng = np.random.default_rng(5)
    base, cand = rng.lognormal(0, 0.2, 40), rng.lognormal(0.1, 0.2, 41)
    library = bootstrap_delta_ci(base, cand, "median", seed=1, resamples=20_000)
    b = np.median(base[rng.integers(0, 40, (20_000, 40))], axis=1)
    c = np.median(cand[rng.integers(0, 41, (20_000, 41))], axis=1)
    brute = np.quantile(c / b - 1, [0.005, 0.995])
    assert library == pytest.approx(tuple(brute), abs=0.015)


def test_large_sample_sets_are_bootstrapped_in_bounded_time():
    """200,000 samples a side: thinned to BOOTSTRAP_MAX_SAMPLES order statistics (a wider, never narrower CI)."""
    import time

    rng = np.random.default_rng(2)
    base, cand = 10 * rng.lognormal(0, 0.02, 200_000), 10.3 * rng.lognormal(0, 0.02, 200_000)
    # CPU time, not wall time: the bound is on the work (2.4 s of CPU when thinned; unthinned, ~70 s at the
    # 35 s per 100,000 samples compare.py measured), which a loaded 2-core box stretched to 7-13 s of wall
    # time at load average 6-7
    t0 = time.process_time()
    low, high = bootstrap_delta_ci(base, cand, "median", seed=0)
    assert time.process_time() - t0 < 30
    assert low < 0.03 < high and high - low < 0.01


def test_decide_is_deterministic():
    base, cand = samples(10, 0.1, 40, 1), samples(10.6, 0.1, 40, 2)
    assert decide(base, cand, "median", 0.05, seed=9) == decide(base, cand, "median", 0.05, seed=9)


def test_terminal_output_keeps_backend_options_and_brackets():
    """Backend labels look like rich markup (`compile[mode=max-autotune]`): they must print verbatim."""
    import io

    from rich.console import Console

    from resbench.report.comparison import print_comparison

    base = run([row(backend="compile", options={"mode": "max-autotune"}, seed=1)], packages={"x": "[/1]"})
    cand = run([row(backend="compile", options={"mode": "max-autotune"}, seed=2)], packages={"x": "[/2]"})
    buffer = io.StringIO()
    print_comparison(compare_runs(base, cand), Console(file=buffer, width=250, color_system=None))
    text = buffer.getvalue()
    assert "resnet50 compile[mode=max-autotune] b1 bf16" in text
    assert "packages.x: [/1] -> [/2]" in text


def test_partial_rows_are_compared_and_named_in_a_warning():
    """A row of a --repeat run that stopped early (1 of 3 repetitions) holds real samples: it is compared,
    and the comparison says which rows are partial instead of passing them off as K-repetition rows."""
    from resbench.runner import combine_repeats

    base = matrix(seed=1)
    cand = matrix(seed=2)
    cand.rows[:2] = combine_repeats([cand.rows[:2]], asked=3)
    comparison = compare_runs(base, cand, cand_name="cand.json")
    assert comparison.exit_code == 0 and all(c.verdict is Verdict.SAME for c in comparison.cases[:2])
    assert comparison.warnings == (
        "cand.json has 2 partial row(s), measured in fewer repetitions than its --repeat asked (the run "
        "stopped: resnet18 eager b1 bf16, resnet18 eager b32 bf16); they are compared on the repetitions "
        "measured",)
    assert "Warning: cand.json has 2 partial row(s)" in render_markdown(comparison)
