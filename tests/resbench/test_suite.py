"""Suite validation: every kind of bad input is one SuiteError line naming the file, the key path, the
bad value and the allowed values; good suites expand into the expected matrix."""

from __future__ import annotations

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
