"""Runtime recommendation: constraints, the ranking on the median with its CI (ties, clean wins, noisy
rows), the Pareto frontier, and why every other runtime lost."""

from __future__ import annotations

import io
from statistics import NormalDist

import pytest
from rich.console import Console

from resbench.errors import RunFileError, UsageError
from resbench.recommend import Constraints, print_recommendation, recommend, recommend_file
from resbench.results import Memory, Parity, ResultRow, RunFile
from resbench.stats import summarize

BUSY = "machine busy: other processes used 1.7 of 2 cores while measured (allowed 0.2)"


def _parity(cosine: float = 0.9999, passed: bool = True, rel_l2: float = 1e-3) -> Parity:
    return Parity(reference="fp64", rel_l2=rel_l2, max_abs=1e-2, cosine=cosine, sqnr_db=60.0, top1_agree=1.0,
                  top5_overlap=1.0, err_ratio=1.0, passed=passed, rule="err_ratio 1 <= 3" if passed else
                  "err_ratio 9 > 3 and rel_l2 0.1 > bf16 floor 0.008")


def samples_around(median_ms: float, cv: float, n: int = 100, p99_ms: float | None = None) -> list[float]:
    """n deterministic samples (normal quantiles) with this median and spread; the slowest two at p99_ms."""
    normal = NormalDist()
    values = [median_ms * (1 + cv * normal.inv_cdf((i + 0.5) / n)) for i in range(n)]
    if p99_ms is not None:
        values[-2:] = [p99_ms, p99_ms]
    return values


def runtime(backend: str, median_ms: float, *, cv: float = 0.002, p99_ms: float | None = None,
            memory_mb: float | None = 1000.0, prepare_s: float = 1.0, batch: int = 32, dtype: str = "bf16",
            model: str = "resnet50", parity: Parity | None = None, status: str = "ok",
            warnings: tuple[str, ...] = (), **options) -> ResultRow:
    fields = dict(model=model, backend=backend, options=options, batch_size=batch, dtype=dtype,
                  image_size=224, memory_format="channels_last", timing_mode="device", device="cuda",
                  status=status)
    if status != "ok":
        return ResultRow(**fields, reason=f"{backend} failed to build")
    samples = samples_around(median_ms, cv, p99_ms=p99_ms or median_ms * 1.05)
    return ResultRow(**fields, samples_ms=samples, latency_ms=summarize(samples),
                     throughput_ips=batch / (summarize(samples).median * 1e-3), prepare_s=prepare_s,
                     memory=Memory(backend_mb=memory_mb, peak_allocated_mb=memory_mb, gpu_process_mb=5000.0),
                     parity=parity or _parity(), warnings=list(warnings))


def run(rows: list[ResultRow]) -> RunFile:
    return RunFile(env={"device": "Test GPU"}, suite={"name": "t"}, rows=rows)


def roles(group) -> dict[str, str]:
    return {r.row.backend_label + " " + r.row.dtype: r.role for r in group.runtimes}


def reasons(group) -> dict[str, str]:
    return {r.row.backend_label + " " + r.row.dtype: r.reason for r in group.runtimes}


def table(recommendation) -> str:
    buffer = io.StringIO()
    print_recommendation(recommendation, Console(file=buffer, width=250, color_system=None))
    return buffer.getvalue()


def test_a_clean_win_and_everyone_else_gets_a_reason():
    rows = [
        runtime("eager", 10.0, prepare_s=0.1),
        runtime("compile", 6.0, prepare_s=40.0),
        runtime("triton", 7.0, prepare_s=50.0, memory_mb=1200.0),         # dominated by compile
        runtime("tensorrt", 4.0, status="skipped"),
        runtime("onnxruntime", 5.0, parity=_parity(passed=False)),
    ]
    (group,) = recommend(run(rows), Constraints()).groups
    assert group.recommended.row.backend == "compile" and group.tied == ()
    assert group.verdict == "recommend compile bf16"
    assert roles(group) == {"compile bf16": "recommended", "eager bf16": "frontier",
                            "triton bf16": "dominated", "tensorrt bf16": "excluded",
                            "onnxruntime bf16": "excluded"}
    why = reasons(group)
    assert why["compile bf16"] == ("lowest median latency: median 6.000 ms, p99 6.300 ms; "
                                   "ahead of the other 2 runtimes meeting the constraints, beyond the 95% CIs")
    assert why["eager bf16"].startswith("Pareto-optimal, but median 10.000 ms")
    assert "(+66.7% vs compile bf16, 95% CIs apart); better on: prepare 0.10 s" in why["eager bf16"]
    assert why["triton bf16"].startswith("dominated by compile bf16: median 7.000 ms vs 6.000 ms")
    assert "skipped: tensorrt failed to build" in why["tensorrt bf16"]
    assert "fails parity" in why["onnxruntime bf16"]


def test_overlapping_samples_are_a_tie_not_a_winner():
    """The issue's case: onnxruntime's median 33.3 ms vs eager's 32.9 ms through 3% noise. The old rule
    (lowest p99, i.e. the slowest sample) named a winner; the medians' CIs overlap, so it is a tie."""
    rows = [runtime("onnxruntime", 33.3, cv=0.03, prepare_s=6.0, p99_ms=36.0),
            runtime("eager", 32.9, cv=0.03, prepare_s=0.05, p99_ms=40.0),
            runtime("compile", 45.0, prepare_s=30.0)]
    (group,) = recommend(run(rows), Constraints()).groups
    assert group.recommended is None
    assert [t.label for t in group.tied] == ["eager bf16", "onnxruntime bf16"]   # cheapest to prepare first
    assert group.verdict == "tie: eager bf16 = onnxruntime bf16 (statistically indistinguishable)"
    why = reasons(group)
    assert why["eager bf16"].startswith("statistically indistinguishable: median 32.900 ms (95% CI ")
    assert why["eager bf16"].endswith("vs onnxruntime bf16 33.300 ms; the 95% CIs overlap; cheapest to "
                                      "prepare (0.05 s)")
    assert roles(group)["compile bf16"] == "dominated"
    assert "tie: eager bf16 = onnxruntime bf16 (statistically indistinguishable)" in table(recommend(run(rows),
                                                                                                    Constraints()))


def test_latency_ranks_on_the_median_not_on_the_slowest_sample():
    rows = [runtime("eager", 10.0, p99_ms=10.2), runtime("compile", 8.0, p99_ms=30.0)]
    (group,) = recommend(run(rows), Constraints()).groups
    assert group.recommended.row.backend == "compile"   # p99 3x worse, median 20% better
    assert "p99 30.000 ms" in group.recommended.reason
    (capped,) = recommend(run(rows), Constraints(max_p99_ms=20.0)).groups   # p99 as an SLA: a constraint
    assert capped.recommended.row.backend == "eager"


def test_throughput_objective_ranks_on_images_per_second():
    rows = [runtime("eager", 10.0, prepare_s=0.1), runtime("compile", 7.0, prepare_s=40)]
    (group,) = recommend(run(rows), Constraints(objective="throughput")).groups
    assert group.recommended.row.backend == "compile"
    assert group.recommended.reason.startswith("highest throughput: 4,571 img/s (median 7.000 ms")
    assert "1,600 img/s" not in group.recommended.reason


def test_noisy_rows_are_marked_and_never_silently_preferred():
    rows = [runtime("eager", 10.0, prepare_s=0.1),
            runtime("compile", 6.0, warnings=(BUSY, "CV 4.0% > 2.5%: latency varies between calls"))]
    (group,) = recommend(run(rows), Constraints()).groups
    assert group.recommended.row.backend == "compile"
    assert group.recommended.doubts == ["busy", "CV 4.0%"]
    assert group.recommended.reason.endswith(
        "; caution: measured with warnings (busy, CV 4.0%); the best clean runtime is eager bf16 "
        "(median 10.000 ms, p99 10.500 ms)")
    assert any("measured under contention, noise or throttling" in note for note in group.notes)
    text = table(recommend(run(rows), Constraints()))
    assert "busy, CV 4.0%" in text and "doubts" in text
    (clean,) = recommend(run([runtime("eager", 10.0), runtime("compile", 6.0)]), Constraints()).groups
    assert "caution" not in clean.recommended.reason and clean.notes == ()


def test_constraints_exclude_with_the_numbers():
    rows = [runtime("eager", 10.0, memory_mb=800.0, parity=_parity(cosine=0.9999)),
            runtime("compile", 6.0, p99_ms=30.0, memory_mb=900.0),
            runtime("triton", 5.0, memory_mb=3000.0),
            runtime("tensorrt", 4.0, memory_mb=900.0, parity=_parity(cosine=0.995))]
    constraints = Constraints(max_p99_ms=20.0, max_memory_gb=2.0, min_cosine=0.999)
    (group,) = recommend(run(rows), constraints).groups
    why = reasons(group)
    assert group.recommended.row.backend == "eager"
    assert why["compile bf16"] == "p99 30.000 ms > --max-p99-ms 20"
    assert why["triton bf16"] == "memory 2.93 GB (backend_mb) > --max-memory-gb 2"
    assert why["tensorrt bf16"] == "cosine 0.995000 < --min-cosine 0.999"


def test_memory_limit_judges_only_per_backend_figures_and_says_so():
    """A process-wide figure (one worker's peak RSS, shared by every backend of the group) must never
    exclude a runtime: the issue's `--max-memory-gb 1` excluded all of them on 2,413 MB of shared RSS."""
    shared = Memory(process_mb=2413.0, source="process_mb: peak RSS of the worker")
    rows = [runtime("eager", 10.0).model_copy(update={"memory": shared}),
            runtime("onnxruntime", 12.0, memory_mb=300.0),
            runtime("compile", 8.0, memory_mb=1500.0)]
    (group,) = recommend(run(rows), Constraints(max_memory_gb=1.0)).groups
    assert roles(group) == {"eager bf16": "recommended", "onnxruntime bf16": "dominated",
                            "compile bf16": "excluded"}
    assert reasons(group)["compile bf16"] == "memory 1.46 GB (backend_mb) > --max-memory-gb 1"
    assert group.recommended.reason.endswith("; --max-memory-gb not checked: no per-backend memory figure")
    assert "--max-memory-gb not checked for eager bf16: no per-backend memory figure" in " ".join(group.notes)
    assert "memory not compared" in " ".join(group.notes)


def test_nothing_meets_the_constraints():
    (group,) = recommend(run([runtime("eager", 10.0)]), Constraints(max_p99_ms=1.0)).groups
    assert group.recommended is None and group.tied == () and roles(group) == {"eager bf16": "excluded"}
    assert group.verdict == "no runtime meets the constraints"


def test_groups_per_model_and_batch_with_filters():
    rows = [runtime("eager", 2.0, batch=1), runtime("compile", 1.5, batch=1),
            runtime("eager", 10.0, batch=32), runtime("compile", 12.0, batch=32),
            runtime("eager", 20.0, batch=32, dtype="fp32")]
    result = recommend(run(rows), Constraints())
    assert [(g.model, g.batch_size, g.recommended.label) for g in result.groups] == [
        ("resnet50", 1, "compile bf16"), ("resnet50", 32, "eager bf16")]
    only = recommend(run(rows), Constraints(batch=32, dtype="fp32"))
    assert [g.recommended.label for g in only.groups] == ["eager fp32"]


@pytest.mark.parametrize("constraints, message", [
    (Constraints(batch=64), "--batch 64 matches no case in the run; batch sizes in it: 1"),
    (Constraints(dtype="fp8"), "--dtype 'fp8' is not allowed; one of: fp32, tf32, fp16, bf16, int8"),
    (Constraints(dtype="fp16"), "--dtype fp16 matches no case in the run; dtypes in it: bf16"),
    (Constraints(objective="speed"), "--objective 'speed' is not allowed; one of: latency, throughput"),
    (Constraints(max_p99_ms=-1.0), "--max-p99-ms -1.0 is not allowed; it must be > 0"),
])
def test_bad_arguments_are_one_line_usage_errors(constraints, message):
    with pytest.raises(UsageError) as info:
        recommend(run([runtime("eager", 1.0, batch=1)]), constraints)
    assert str(info.value) == message


def test_missing_run_file(tmp_path):
    with pytest.raises(RunFileError):
        recommend_file(str(tmp_path / "nope.json"), Constraints())


def test_console_output_names_every_runtime():
    rows = [runtime("eager", 10.0), runtime("compile", 6.0), runtime("tensorrt", 4.0, status="failed")]
    buffer = io.StringIO()
    print_recommendation(recommend(run(rows), Constraints()),
                         Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    assert "recommend compile bf16" in text
    for label in ("eager bf16", "compile bf16", "tensorrt bf16"):
        assert label in text
    assert "failed: tensorrt failed to build" in text


def test_console_output_keeps_backend_options():
    rows = [runtime("eager", 10.0), runtime("compile", 6.0, mode="max-autotune")]
    buffer = io.StringIO()
    print_recommendation(recommend(run(rows), Constraints()), Console(file=buffer, width=200, color_system=None))
    assert "recommend compile[mode=max-autotune] bf16" in buffer.getvalue()


# ------------------------------------------------------------------------------------ int8 trade-off


def _int8_parity(passed: bool, top1: float, cosine: float) -> Parity:
    words = "agrees on" if passed else "FAILS: agrees on"
    rule = f"int8 {words} top-1 for {round(top1 * 16)}/16 images, top-5 overlap 0.95, cosine {cosine:.4f}"
    return Parity(reference="fp64", rel_l2=0.05, max_abs=0.5, cosine=cosine, sqnr_db=26.0, top1_agree=top1,
                  top5_overlap=0.95, err_ratio=1.5, passed=passed, rule=rule, images=16)


def test_each_int8_row_states_its_speedup_and_its_parity_verdict():
    rows = [
        runtime("eager", 10.0, dtype="fp32", batch=1),
        runtime("openvino", 6.0, dtype="fp32", batch=1),
        runtime("compile", 4.0, dtype="fp32", batch=1, parity=_parity(passed=False)),  # fails: not the baseline
        runtime("onnxruntime", 2.4, dtype="int8", batch=1, parity=_int8_parity(True, 15 / 16, 0.9981)),
        runtime("torchao", 3.0, dtype="int8", batch=1, parity=_int8_parity(False, 9 / 16, 0.91)),
        runtime("eager", 1.0, dtype="int8", batch=1, status="skipped"),
    ]
    (group,) = recommend(run(rows), Constraints()).groups
    buffer = io.StringIO()
    print_recommendation(recommend(run(rows), Constraints()), Console(file=buffer, width=250, color_system=None))
    lines = [line.strip() for line in buffer.getvalue().splitlines() if "int8 trade-off" in line]
    assert lines == [
        "int8 trade-off: onnxruntime int8: 2.50x the speed of the fastest float row, openvino fp32 (median 2.400 ms "
        "vs 6.000 ms); parity pass: int8 agrees on top-1 for 15/16 images, top-5 overlap 0.95, cosine 0.9981",
        "int8 trade-off: torchao int8: 2.00x the speed of the fastest float row, openvino fp32 (median 3.000 ms "
        "vs 6.000 ms); parity FAIL: int8 FAILS: agrees on top-1 for 9/16 images, top-5 overlap 0.95, cosine 0.9100",
    ]
    assert roles(group)["torchao int8"] == "excluded"  # a failing int8 row is never recommended


def test_int8_only_run_says_there_is_no_float_row_to_compare_with():
    rows = [runtime("onnxruntime", 2.0, dtype="int8", batch=1, parity=_int8_parity(True, 1.0, 0.999))]
    buffer = io.StringIO()
    print_recommendation(recommend(run(rows), Constraints(dtype="int8")), Console(file=buffer, width=250,
                                                                                  color_system=None))
    assert "onnxruntime int8: median 2.000 ms (no float row passing parity to compare with)" in buffer.getvalue()


def test_a_run_without_latency_rows_is_an_error_not_an_empty_answer():
    """An empty run (an empty shard) printed only a title and exited 0, as if it had judged something."""
    with pytest.raises(UsageError) as info:
        recommend(RunFile(env={}, suite={}, rows=[]), Constraints())
    assert str(info.value) == ("the run holds no latency rows, so there is nothing to recommend from "
                               "(0 rows; serving rows: --scenario)")
    assert info.value.exit_code == 2


def test_a_partial_row_is_marked_and_never_silently_preferred():
    """A row of a --repeat 3 run that stopped after one repetition is a doubt, like a noisy one: its median
    is not the median of three runs."""
    from resbench.runner import combine_repeats

    (partial,) = combine_repeats([[runtime("compile", 6.0)]], asked=3)
    (group,) = recommend(run([runtime("eager", 10.0), partial]), Constraints()).groups
    assert group.recommended.row.backend == "compile" and group.recommended.doubts == ["1/3 repetitions"]
    assert group.recommended.reason.endswith(
        "; caution: measured with warnings (1/3 repetitions); the best clean runtime is eager bf16 "
        "(median 10.000 ms, p99 10.500 ms)")
    assert "1/3 repetitions" in table(recommend(run([runtime("eager", 10.0), partial]), Constraints()))
