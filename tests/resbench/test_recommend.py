"""Runtime recommendation: constraints, the Pareto frontier, the pick, and why every other runtime lost."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from resbench.errors import RunFileError, UsageError
from resbench.recommend import Constraints, print_recommendation, recommend, recommend_file
from resbench.results import Memory, Parity, ResultRow, RunFile
from resbench.stats import summarize


def _parity(cosine: float = 0.9999, passed: bool = True, rel_l2: float = 1e-3) -> Parity:
    return Parity(reference="fp64", rel_l2=rel_l2, max_abs=1e-2, cosine=cosine, sqnr_db=60.0, top1_agree=1.0,
                  top5_overlap=1.0, err_ratio=1.0, passed=passed, rule="err_ratio 1 <= 3" if passed else
                  "err_ratio 9 > 3 and rel_l2 0.1 > bf16 floor 0.008")


def runtime(backend: str, median_ms: float, *, p99_ms: float | None = None, memory_mb: float = 1000.0,
            prepare_s: float = 1.0, batch: int = 32, dtype: str = "bf16", model: str = "resnet50",
            parity: Parity | None = None, status: str = "ok", **options) -> ResultRow:
    fields = dict(model=model, backend=backend, options=options, batch_size=batch, dtype=dtype,
                  image_size=224, memory_format="channels_last", timing_mode="device", device="cuda",
                  status=status)
    if status != "ok":
        return ResultRow(**fields, reason=f"{backend} failed to build")
    p99 = p99_ms or median_ms * 1.05
    samples = [median_ms] * 98 + [p99, p99]
    return ResultRow(**fields, samples_ms=samples, latency_ms=summarize(samples),
                     throughput_ips=batch / (median_ms * 1e-3), prepare_s=prepare_s,
                     memory=Memory(peak_allocated_mb=memory_mb, gpu_process_mb=5000.0),
                     parity=parity or _parity())


def run(rows: list[ResultRow]) -> RunFile:
    return RunFile(env={"device": "Test GPU"}, suite={"name": "t"}, rows=rows)


def roles(group) -> dict[str, str]:
    return {r.row.backend_label + " " + r.row.dtype: r.role for r in group.runtimes}


def reasons(group) -> dict[str, str]:
    return {r.row.backend_label + " " + r.row.dtype: r.reason for r in group.runtimes}


def test_fastest_wins_and_everyone_else_gets_a_reason():
    rows = [
        runtime("eager", 10.0, prepare_s=0.1),
        runtime("compile", 6.0, prepare_s=40.0),
        runtime("triton", 7.0, prepare_s=50.0, memory_mb=1200.0),         # dominated by compile
        runtime("tensorrt", 4.0, status="skipped"),
        runtime("onnxruntime", 5.0, parity=_parity(passed=False)),
    ]
    (group,) = recommend(run(rows), Constraints()).groups
    assert group.recommended.row.backend == "compile"
    assert roles(group) == {"compile bf16": "recommended", "eager bf16": "frontier",
                            "triton bf16": "dominated", "tensorrt bf16": "excluded",
                            "onnxruntime bf16": "excluded"}
    why = reasons(group)
    assert why["compile bf16"] == "lowest p99 (6.300 ms) of the 3 runtimes meeting the constraints"
    assert "better on: prepare 0.10 s" in why["eager bf16"]
    assert why["triton bf16"].startswith("dominated by compile bf16: p99 7.350 ms vs p99 6.300 ms")
    assert "skipped: tensorrt failed to build" in why["tensorrt bf16"]
    assert "fails parity" in why["onnxruntime bf16"]


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
    assert why["triton bf16"] == "memory 2.93 GB (peak_allocated_mb) > --max-memory-gb 2"
    assert why["tensorrt bf16"] == "cosine 0.995000 < --min-cosine 0.999"


def test_nothing_meets_the_constraints():
    (group,) = recommend(run([runtime("eager", 10.0)]), Constraints(max_p99_ms=1.0)).groups
    assert group.recommended is None and roles(group) == {"eager bf16": "excluded"}


def test_throughput_objective_and_near_ties_prefer_the_cheaper_build():
    rows = [runtime("eager", 10.0, p99_ms=10.2, prepare_s=0.1),
            runtime("compile", 9.8, p99_ms=30.0, prepare_s=40)]
    latency = recommend(run(rows), Constraints(objective="latency")).groups[0]
    assert latency.recommended.row.backend == "eager"            # compile's p99 is 3x worse
    throughput = recommend(run(rows), Constraints(objective="throughput")).groups[0]
    # compile is 2% faster: within NEAR_TIE, so eager's 0.1 s prepare beats compile's 40 s
    assert throughput.recommended.row.backend == "eager"
    assert "within 3%" in throughput.recommended.reason and "prepares in 0.10 s vs 40.00 s" in \
        throughput.recommended.reason
    faster = [runtime("eager", 10.0, prepare_s=0.1), runtime("compile", 7.0, prepare_s=40)]
    assert recommend(run(faster), Constraints(objective="throughput")).groups[0].recommended.row.backend == \
        "compile"


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
    (Constraints(dtype="int8"), "--dtype 'int8' is not allowed; one of: fp32, tf32, fp16, bf16"),
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
