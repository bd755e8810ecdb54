"""Run files: round trip, schema checks, the atomic rewrite that keeps a readable file at all times, and the
runner's repeated saves from kept row texts (RunFileWriter), byte for byte `RunFile.to_json()`."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from resbench import results
from resbench.errors import RunFileError
from resbench.results import SCHEMA, LatencyStats, Parity, ResultRow, RunFile, RunFileWriter
from resbench.stats import summarize


def make_row(backend: str = "eager", batch: int = 1, samples: list[float] | None = None, **kw) -> ResultRow:
    samples = samples or [1.0, 1.1, 0.9, 1.05, 0.95]
    return ResultRow(model="resnet50", backend=backend, batch_size=batch, dtype="bf16", image_size=224,
                     memory_format="channels_last", timing_mode="device", device="cuda", status="ok",
                     latency_ms=summarize(samples), samples_ms=samples, **kw)


def make_run(rows: int = 3) -> RunFile:
    return RunFile(env={"device": "test"}, suite={"name": "t"}, rows=[make_row(batch=b) for b in range(1, rows + 1)])


def test_round_trip(tmp_path: Path) -> None:
    run = make_run()
    run.rows[0].parity = Parity(reference="fp64", rel_l2=1e-3, max_abs=0.01, cosine=0.9999, sqnr_db=60.0,
                                top1_agree=1.0, top5_overlap=1.0, err_ratio=None, passed=True, rule="x")
    path = tmp_path / "run.json"
    run.save(path)
    data = json.loads(path.read_text())
    assert data["schema"] == SCHEMA
    loaded = RunFile.load(path)
    assert loaded == run
    assert isinstance(loaded.rows[0].latency_ms, LatencyStats)
    assert loaded.rows[1].samples_ms == run.rows[1].samples_ms


def test_failed_rows_need_no_measurements(tmp_path: Path) -> None:
    run = RunFile(env={}, suite={}, rows=[ResultRow(
        model="resnet50", backend="tensorrt", batch_size=1, dtype="fp16", image_size=224,
        memory_format="channels_last", timing_mode="device", device="cpu", status="skipped",
        reason="TensorRT is not installed")])
    run.save(tmp_path / "r.json")
    assert RunFile.load(tmp_path / "r.json").rows[0].reason == "TensorRT is not installed"


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "not readable JSON"),
    ('{"schema": "other/1"}', "has schema 'other/1'; expected 'resbench.run/1'"),
    ('[1, 2]', "has schema 'list'"),
    ('{"schema": "resbench.run/1", "env": {}, "suite": {}, "rows": [{"model": 1}]}', "is invalid at rows.0"),
])
def test_bad_run_files_are_one_line_errors(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RunFileError) as info:
        RunFile.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    make_run(1).save(path)
    inode_before = os.stat(path).st_ino
    make_run(5).save(path)
    assert len(RunFile.load(path).rows) == 5
    assert os.stat(path).st_ino != inode_before  # a new file renamed over the old one, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def _rewrite_forever(path: str, stop) -> None:
    n = 1
    while not stop.is_set():
        n = n % 40 + 1   # 2, 3, ..., 40, 1, 2, ...: the first write already differs from the file it replaces
        make_run(n).save(path)


def test_a_concurrent_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    make_run(1).save(path)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    writer = ctx.Process(target=_rewrite_forever, args=(str(path), stop))
    writer.start()
    try:
        # The reads count only once the writer is writing: a spawned process takes ~0.4 s to start (seconds
        # on a loaded box), and 300 reads took 0.06 s, so they used to be over before its first write.
        deadline = time.monotonic() + 120
        while len(RunFile.load(path).rows) == 1:
            assert writer.is_alive() and time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.01)
        for _ in range(300):
            RunFile.load(path)  # raises RunFileError on a torn file
    finally:
        stop.set()
        writer.join(60)
        if writer.is_alive():
            writer.kill()
    assert writer.exitcode == 0


def test_nan_metrics_survive_a_round_trip(tmp_path: Path) -> None:
    nan = float("nan")
    run = make_run(1)
    run.rows[0].parity = Parity(reference="fp64", rel_l2=nan, max_abs=nan, cosine=nan, sqnr_db=nan,
                                top1_agree=0.0, top5_overlap=0.2, err_ratio=None, passed=False, rule="NaN")
    run.save(tmp_path / "nan.json")
    loaded = RunFile.load(tmp_path / "nan.json").rows[0].parity
    assert loaded.rel_l2 != loaded.rel_l2 and loaded.passed is False  # NaN stays NaN


def test_reading_a_run_file_does_not_import_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    make_run(2).save(tmp_path / "r.json")
    code = ("import sys; from resbench.results import RunFile; "
            f"r = RunFile.load({str(tmp_path / 'r.json')!r}); r.rows[0].identity; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # report / compare / recommend start fast


# ------------------------------------------------------------------------------------ never trust a file


def _tampered(tmp_path: Path, edit) -> Path:
    """A valid run file with one edit applied to its JSON (as an editor, a bug or a hand would)."""
    data = json.loads(make_run(3).to_json())
    edit(data)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(data))   # json writes NaN / Infinity as Python reads them back
    return path


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return edit


@pytest.mark.parametrize("edit, where", [
    (_set("rows", 1, "samples_ms", 2, float("nan")), "rows.1.samples_ms.2: Input should be a finite number"),
    (_set("rows", 1, "samples_ms", 0, float("inf")), "rows.1.samples_ms.0: Input should be a finite number"),
    (_set("rows", 2, "samples_ms", 4, 0.0), "rows.2.samples_ms.4: Input should be greater than 0 (got 0.0)"),
    (_set("rows", 0, "samples_ms", 1, -3.0), "rows.0.samples_ms.1: Input should be greater than 0 (got -3.0)"),
    (_set("rows", 0, "latency_ms", "p99", -6.144), "rows.0.latency_ms.p99: Input should be greater than 0"),
    (_set("rows", 0, "latency_ms", "median", float("nan")), "rows.0.latency_ms.median: Input should be a finite"),
    (_set("rows", 1, "samples_ms", []), "rows.1: an ok row needs its raw samples and statistics; samples_ms is empty"),
    (_set("rows", 1, "latency_ms", None), "rows.1: an ok row needs its raw samples and statistics; latency_ms"),
    (_set("rows", 2, "samples_ms", [1.0, 1.1]), "rows.2: latency_ms.n is 5 but samples_ms holds 2 samples"),
    (_set("rows", 0, "memory", {"process_mb": -1.0}), "rows.0.memory.process_mb: Input should be greater than or"),
    (_set("rows", 0, "throughput_ips", float("inf")), "rows.0.throughput_ips: Input should be a finite number"),
    (_set("rows", 0, "repeat_medians_ms", [1.0, 0.0]), "rows.0.repeat_medians_ms.1: Input should be greater than 0"),
])
def test_impossible_measurements_are_rejected_on_load_naming_row_and_field(tmp_path, edit, where):
    """NaN, infinite, zero or negative latencies used to PASS the gate (negative as FASTER -200%) and win
    `recommend` ("lowest p99 (-6.144 ms)")."""
    path = _tampered(tmp_path, edit)
    with pytest.raises(RunFileError) as info:
        RunFile.load(path)
    message = str(info.value)
    assert message.startswith(f"run file {str(path)!r} is invalid at ") and where in message, message
    assert "\n" not in message and info.value.exit_code == 2


def test_deeply_nested_json_and_huge_values_are_one_short_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"schema": "resbench.run/1", "env": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(RunFileError, match="nested too deeply"):
        RunFile.load(deep)
    huge = _tampered(tmp_path, _set("rows", 0, "batch_size", "x" * 1_000_000))
    with pytest.raises(RunFileError) as info:
        RunFile.load(huge)
    assert "rows.0.batch_size" in str(info.value) and len(str(info.value)) < 700


def test_settings_are_recorded_and_old_files_without_them_still_load(tmp_path):
    run = make_run(1)
    run.settings.repeat = 3
    run.save(tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["settings"] == {"repeat": 3}
    data = json.loads(make_run(1).to_json())
    del data["settings"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert RunFile.load(tmp_path / "old.json").settings.repeat == 1

def varied_rows() -> list:
    """Rows of every shape a run file holds: measured with parity (a NaN metric), skipped with a reason
    that has a newline, quotes and non-ASCII text, and options and artifacts nested a few levels."""
    measured = make_row("onnxruntime", 8, samples=[1.0 + i / 100 for i in range(50)],
                        options={"calibration": {"method": "entropy", "samples": 8}},
                        artifacts={"qdq_nodes": {"QuantizeLinear": 3}, "int8_onnx_reused": True, "path": "/tmp/ü"})
    measured.parity = Parity(reference="fp64", rel_l2=math.nan, max_abs=math.inf, cosine=0.5, sqnr_db=-1.0,
                             top1_agree=0.5, top5_overlap=0.75, err_ratio=None, passed=False, rule='"x"\ny')
    skipped = make_row("tensorrt", 1).model_copy(update={"status": "skipped", "latency_ms": None,
                                                         "samples_ms": [], "reason": 'no "TensorRT"\n— ünïcode'})
    return [measured, skipped, make_row("eager", 2)]


def test_saves_as_rows_grow_change_and_go_are_the_bytes_of_to_json(tmp_path: Path) -> None:
    rows = varied_rows()
    run = RunFile(env={"device": "cpu é"}, suite={"name": "t"})
    writer = RunFileWriter()
    path = tmp_path / "run.json"
    states = [[], rows[:1], rows[:2], rows, [rows[0], make_row("eager", 4), rows[2]], [rows[2]]]
    for state in states:  # grow, grow, grow, a row replaced by a new one (a resumed case), rows dropped
        run.rows = list(state)
        writer.save(run, path)
        assert path.read_bytes() == run.to_json().encode(), f"differs with {len(state)} rows"
        assert RunFile.load(path).to_json() == run.to_json()  # and it loads (NaN != NaN: compare texts)


def test_a_kept_row_is_serialised_once(monkeypatch) -> None:
    made: list[str] = []
    real = results._row_text
    monkeypatch.setattr(results, "_row_text", lambda row: made.append(row.backend) or real(row))
    rows = varied_rows()
    run = RunFile(env={}, suite={})
    writer = RunFileWriter()
    for n in range(1, len(rows) + 1):
        run.rows = rows[:n]
        writer.to_json(run)
    writer.to_json(run)
    assert made == ["onnxruntime", "tensorrt", "eager"]  # three rows, three serialisations over four saves
    run.rows = [rows[0], make_row("compile", 2)]
    writer.to_json(run)
    assert made[3:] == ["compile"]  # only the new object


def test_a_second_row_of_one_case_is_rejected_on_load(tmp_path):
    """A run file with two rows of one case used to load: `compare` then judged whichever came first (a 100x
    slower duplicate before the real row read PASS, after it SLOWER), `report` listed both."""
    def duplicate_slower(data):
        slow = json.loads(json.dumps(data["rows"][1]))
        slow["samples_ms"] = [s * 100 for s in slow["samples_ms"]]
        data["rows"].insert(0, slow)
    path = _tampered(tmp_path, duplicate_slower)
    with pytest.raises(RunFileError) as info:
        RunFile.load(path)
    assert str(info.value) == (f"run file {str(path)!r} is invalid: row 2 (resnet50 eager b2 bf16) repeats the "
                               f"case of row 0; a run file holds one row per case")
    assert info.value.exit_code == 2
