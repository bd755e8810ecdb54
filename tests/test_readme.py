"""The README's set-up commands are the ones CI runs."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_the_readme_test_command_verbatim():
    readme = _bash_blocks((ROOT / "README.md").read_text())
    test_command = next(block for block in readme if block.endswith("python -m pytest"))
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci


def test_readme_extras_exist():
    # `pip install -e ".[onnx,openvino,...]"` with an extra pyproject.toml lacks only warns: the tests would
    # then skip instead of failing.
    text = (ROOT / "README.md").read_text() + (ROOT / "CONTRIBUTING.md").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    defined = set(re.findall(r"^([a-z0-9_-]+)\s*=", section, flags=re.M))
    named = {extra for group in re.findall(r'\.\[([a-z0-9_,-]+)\]', text) for extra in group.split(",")}
    assert named and named <= defined, named - defined
