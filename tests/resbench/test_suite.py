"""Suite validation: every kind of bad input is one SuiteError line naming the file, the key path, the
bad value and the allowed values; good suites expand into the expected matrix."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from resbench.errors import SuiteError
from resbench.suite import Suite, expand, load_suite, parse_suite

SUITES = Path(__file__).resolve().parents[2] / "suites"

GOOD = """
name: t
models: [resnet18]
backends: [eager]
batch_sizes: [1, 2]
dtypes: [fp32]
"""


def error_of(text: str) -> str:
    with pytest.raises(SuiteError) as info:
        parse_suite(text, "bad.yaml")
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith("bad.yaml: "), message
    return message


@pytest.mark.parametrize("text, expected", [
    ("name: [unclosed", ["invalid YAML", "line 1"]),
    ("- just\n- a list", ["a suite is a YAML mapping", "got list"]),
    (GOOD + "colour: blue\n", ["colour", "unknown key 'colour'", "allowed keys:", "batch_sizes"]),
    (GOOD.replace("dtypes: [fp32]", "dtypes: [fp8]"), ["dtypes[0]", "'fp8'", "'fp32'", "'bf16'"]),
    (GOOD.replace("[resnet18]", "[resnet51]"), ["models[0].name", "unknown model 'resnet51'", "resnet50"]),
    (GOOD.replace("[eager]", "[tensorflow]"), ["backends[0].name", "unknown backend 'tensorflow'", "eager"]),
    (GOOD.replace("[eager]", "[{name: compile, mode: fastest}]"), ["backends[0].mode", "'fastest'",
                                                                    "max-autotune"]),
    (GOOD.replace("[eager]", "[{name: compile, colour: 1}]"), ["backends[0].colour", "unknown option 'colour'",
                                                               "allowed: mode"]),
    (GOOD.replace("[1, 2]", "[1, 0]"), ["batch_sizes", "batch size 0", ">= 1"]),
    (GOOD.replace("[1, 2]", "[1, two]"), ["batch_sizes[1]", "'two'"]),
    (GOOD.replace("[1, 2]", "[]"), ["batch_sizes", "must not be empty"]),
    (GOOD.replace("models: [resnet18]\n", ""), ["models", "required key is missing"]),
    (GOOD + "image_size: 16\n", ["image_size", "16", ">= 32"]),
    (GOOD + "timing: {min_iters: 0}\n", ["timing.min_iters", "greater than or equal to 1", "got 0"]),
    (GOOD + "timing: {min_time_s: 5, max_time_s: 1}\n", ["timing", "max_time_s (1.0) must be >= min_time_s"]),
    (GOOD + "timing: {l2: lukewarm}\n", ["timing.l2", "'warm'", "'cold'", "lukewarm"]),
    (GOOD + "device: tpu\n", ["device", "'auto'", "'cuda'", "'cpu'", "tpu"]),
    (GOOD + "cpu: {batch_sizes: [-1]}\n", ["cpu.batch_sizes", "batch size -1"]),
    (GOOD + "cpu: {timing: {warmup: 1}}\n", ["cpu.timing.warmup", "unknown key 'warmup'", "warmup_s"]),
    (GOOD + "memory_format: nhwc\n", ["memory_format", "'channels_last'", "nhwc"]),
    (GOOD.replace("[resnet18]", "['python:nocallable']"), ["models[0].name", "python:module:callable"]),
])
def test_bad_suite_is_one_line_naming_key_value_and_allowed(text: str, expected: list[str]) -> None:
    message = error_of(text)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_missing_file_names_the_file_and_lists_suites(tmp_path: Path) -> None:
    (tmp_path / "real.yaml").write_text(GOOD)
    with pytest.raises(SuiteError, match=r"missing\.yaml: suite file does not exist; suites in .*: real\.yaml"):
        load_suite(tmp_path / "missing.yaml")


def test_a_suite_path_that_is_no_file_says_what_it_is(tmp_path: Path) -> None:
    """A directory or a FIFO given as the suite read "suite file does not exist"."""
    (tmp_path / "suites").mkdir()
    fifo = tmp_path / "suite.fifo"
    os.mkfifo(fifo)
    for path, kind in ((tmp_path / "suites", "a directory"), (fifo, "a FIFO")):
        with pytest.raises(SuiteError, match=f"^{path}: {kind}, not a suite file; give a YAML file$"):
            load_suite(path)


def test_expansion_is_models_x_dtypes_x_batches_x_backends() -> None:
    suite = parse_suite("""
name: t
models: [resnet18, resnet50]
backends: [eager, {name: compile, mode: default}, {name: compile, mode: max-autotune}]
batch_sizes: [1, 8]
dtypes: [fp32, bf16]
""")
    cases = expand(suite, "cuda")
    assert len(cases) == 2 * 2 * 2 * 3
    # default options are dropped, so {mode: default} is the same case as plain `compile`
    assert {c.backend_label for c in cases} == {"eager", "compile", "compile[mode=max-autotune]"}
    assert len({c.identity for c in cases}) == len(cases)


def test_cpu_overrides_apply_only_on_cpu() -> None:
    suite = parse_suite(GOOD + "cpu: {batch_sizes: [4], dtypes: [bf16], image_size: 64, timing: {max_time_s: 2}}\n")
    cpu = expand(suite, "cpu")
    assert {(c.batch_size, c.dtype, c.image_size, c.timing.max_time_s) for c in cpu} == {(4, "bf16", 64, 2.0)}
    cuda = expand(suite, "cuda")
    assert {c.batch_size for c in cuda} == {1, 2} and {c.image_size for c in cuda} == {224}
    assert cuda[0].timing.max_time_s == 10.0


def test_suite_is_frozen() -> None:
    suite = parse_suite(GOOD)
    with pytest.raises(ValidationError, match="frozen"):
        suite.name = "other"  # type: ignore[misc]


@pytest.mark.parametrize("path", sorted(SUITES.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_suites_validate(path: Path) -> None:
    suite = load_suite(path)
    assert isinstance(suite, Suite)
    assert expand(suite, "cpu") and expand(suite, "cuda")


# ------------------------------------------------------------------------------------ untrusted input

LAUGHS = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(8))


def _bounded(fn, *args):
    """(result or exception, CPU seconds, peak MB of Python allocations) of fn(*args): timed in one call and
    traced in another (tracemalloc slows Python code several-fold). CPU time of this process, not wall time:
    the bound is on the work done, and a loaded 2-core box stretches wall time about 5x (the 100,000-value
    list below: 0.9 s of CPU took 4.7 s of wall time at load average 7, against a 10 s bound)."""
    import time
    import tracemalloc

    def call():
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - returned for the assertions
            return exc

    t0 = time.process_time()
    result = call()
    seconds = time.process_time() - t0
    tracemalloc.start()
    try:
        call()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    return result, seconds, peak


def test_billion_laughs_is_rejected_in_bounded_time_and_memory() -> None:
    """Nested anchors expanding to 10^9 values: 32 s, 3.6 GB and a MemoryError before the alias budget."""
    text = LAUGHS + GOOD.replace("backends: [eager]", "backends: [{name: eager, x: *i}]")
    assert len(text) < 1000
    error, seconds, peak_mb = _bounded(parse_suite, text, "bad.yaml")
    assert isinstance(error, SuiteError), error
    assert "expands to more than 20,000 values" in str(error) and len(str(error)) < 300
    assert seconds < 5 and peak_mb < 50, (seconds, peak_mb)


def test_millions_of_duplicate_batch_sizes_are_refused_without_parsing_them(tmp_path: Path) -> None:
    """3.5 million duplicates ran to a MemoryError; the file is refused by its size before any parsing."""
    path = tmp_path / "big.yaml"
    with path.open("w") as f:
        f.write(GOOD.replace("batch_sizes: [1, 2]\n", ""))
        f.write("batch_sizes: [" + "1, " * 3_500_000 + "1]\n")
    error, seconds, peak_mb = _bounded(load_suite, path)
    assert isinstance(error, SuiteError) and "larger than 1,048,576 bytes" in str(error), error
    assert seconds < 5 and peak_mb < 50, (seconds, peak_mb)
    # within the size limit, a list longer than the value budget stops the parser early
    error, seconds, peak_mb = _bounded(parse_suite, GOOD + "cpu: {batch_sizes: [" + "1," * 100_000 + "1]}\n")
    assert isinstance(error, SuiteError) and "more than 20,000 values" in str(error), error
    assert seconds < 10 and peak_mb < 100, (seconds, peak_mb)


@pytest.mark.parametrize("text, expected", [
    (GOOD + "name: again\n", ["line 7", "key 'name' is given twice (first on line 2)"]),
    (GOOD.replace("[1, 2]", "[1, 1]"), ["batch_sizes", "batch size 1 is listed twice (positions 0 and 1)"]),
    (GOOD.replace("[resnet18]", "[resnet18, {name: resnet18}]"), ["models", "model 'resnet18' is listed twice"]),
    (GOOD.replace("[fp32]", "[fp32, bf16, fp32]"), ["dtypes", "dtype 'fp32' is listed twice"]),
    (GOOD.replace("[eager]", "[eager, eager]"), ["backends[1]", "same case as backends[0] (eager"]),
    (GOOD.replace("[eager]", "[eager, {name: eager, cuda_graphs: false}]"), ["backends[1]", "same case"]),
    (GOOD + "cpu: {batch_sizes: [2, 2]}\n", ["cpu.batch_sizes", "listed twice"]),
    (GOOD.replace("[1, 2]", "[true]"), ["batch_sizes[0]", "valid integer (got True)"]),
    (GOOD.replace("[1, 2]", "['8']"), ["batch_sizes[0]", "valid integer (got '8')"]),
    (GOOD + "image_size: 224.0\n", ["image_size", "valid integer"]),
    (GOOD + "parity: {seed: 18446744073709551616}\n", ["parity.seed", "less than or equal to 9223372036854775807"]),
    (GOOD + "parity: {seed: -1}\n", ["parity.seed", "greater than or equal to 0"]),
    (GOOD.replace("name: t", "name: ../../../x"), ["name", "'../../../x' is not allowed", "runs/<name>/"]),
    (GOOD.replace("name: t", "name: /abs/dir"), ["name", "'/abs/dir' is not allowed"]),
    (GOOD.replace("name: t", "name: ''"), ["name", "is not allowed"]),
    (GOOD + "x: " + "[" * 200 + "]" * 200 + "\n", ["nested more than 32 levels deep"]),
    (GOOD + "x: &r [*r]\n", ["recursive alias"]),
    # a non-finite time passed validation, then every case failed (OverflowError) or never timed out
    (GOOD + "timing: {max_time_s: .inf}\n", ["timing.max_time_s", "finite number (got inf)"]),
    (GOOD + "timing: {case_timeout_s: .inf}\n", ["timing.case_timeout_s", "finite number (got inf)"]),
    (GOOD + "timing: {warmup_s: .inf}\n", ["timing.warmup_s", "finite number (got inf)"]),
    (GOOD + "cpu: {timing: {max_time_s: .inf}}\n", ["cpu.timing.max_time_s", "finite number"]),
    (GOOD + "serving: {duration_s: .inf}\n", ["serving.duration_s", "finite number"]),
    (GOOD + "serving: {max_wait_ms: .nan}\n", ["serving.max_wait_ms", "finite number"]),
    # 100,000 OpenMP threads crashed every worker with SIGSEGV in prepare
    (GOOD + "threads: 100000\n", ["threads", "less than or equal to 1024 (got 100000)"]),
    # a query count beyond LoadGen's uint64 passed validation, then every serving case failed (TypeError)
    (GOOD + "serving: {min_queries: 99999999999999999999}\n", ["serving.min_queries", "less than or equal to"]),
    (GOOD + "cpu: {serving: {min_queries: 99999999999999999999}}\n", ["cpu.serving.min_queries", "less than"]),
    (GOOD.replace("[1, 2]", "[" + ", ".join(str(b) for b in range(1, 101)) + "]")
     .replace("[eager]", "[eager, compile, {name: compile, mode: max-autotune}, onnxruntime]")
     .replace("[fp32]", "[fp32, fp16, bf16, tf32]").replace("[resnet18]", "[resnet18, resnet34, resnet50, resnet101]"),
     ["expands to 6,400 cases on cuda (4 models x 4 backends x 100 batch_sizes x 4 dtypes); at most 5,000"]),
])
def test_untrusted_suite_text_is_one_line(text: str, expected: list[str]) -> None:
    message = error_of(text)
    for fragment in expected:
        assert fragment in message, message


def test_an_error_shows_a_huge_value_truncated() -> None:
    message = error_of(GOOD + "image_size: '" + "x" * 900_000 + "'\n")
    assert "image_size" in message and "chars]" in message and len(message) < 700


def test_a_non_utf8_suite_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(GOOD.replace("name: t", "name: caf\xe9").encode("latin-1"))
    with pytest.raises(SuiteError, match=r"not UTF-8 text \(byte 0xe9 at offset \d+\)"):
        load_suite(path)


def test_relative_weights_resolve_against_the_suite_folder(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "suite.yaml").write_text(GOOD.replace("[resnet18]", "[{name: resnet18, weights: ckpt/r18.pth}]"))
    monkeypatch.chdir(tmp_path)   # not the suite's folder
    suite = load_suite("project/suite.yaml")
    assert suite.models[0].weights == str(folder / "ckpt" / "r18.pth")
    absolute = GOOD.replace("[resnet18]", "[{name: resnet18, weights: /data/r18.pth}]")
    assert parse_suite(absolute, "x.yaml", base_dir=folder).models[0].weights == "/data/r18.pth"
