"""Reads what LoadGen wrote: `mlperf_log_summary.txt` (figures and verdict) and `mlperf_log_accuracy.json`
(each logged response's bytes). A serving row's figures are copied from these files, never computed
again, so a row always says what LoadGen said.

The summary is `key : value` lines (LoadGen 6.0 writes both `key : value` and `key: value`), indented
condition lines (`  Min duration satisfied : Yes`), and bulleted blocks under a heading
(`Recommendations:`, `Early Stopping Result:`) whose bullets may wrap onto lines that start with a space."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

SUMMARY_FILE = "mlperf_log_summary.txt"
ACCURACY_FILE = "mlperf_log_accuracy.json"
NS_PER_MS = 1e6

# Additional Stats lines -> LoadgenLatency fields
LATENCY_KEYS = {"min": "Min latency (ns)", "mean": "Mean latency (ns)", "p50": "50.00 percentile latency (ns)",
                "p90": "90.00 percentile latency (ns)", "p95": "95.00 percentile latency (ns)",
                "p97": "97.00 percentile latency (ns)", "p99": "99.00 percentile latency (ns)",
                "p99_9": "99.90 percentile latency (ns)", "max": "Max latency (ns)"}
# the scenario's throughput line
THROUGHPUT_KEYS = {"SingleStream": "QPS w/o loadgen overhead", "Server": "Completed samples per second",
                   "Offline": "Samples per second"}
_EARLY_STOPPING = re.compile(r"Early stopping [0-9.]+th percentile estimate: *([0-9]+)")


@dataclass
class Summary:
    values: dict[str, str] = field(default_factory=dict)        # "Result is" -> "VALID", ...
    lines: dict[str, str] = field(default_factory=dict)         # key -> its line as LoadGen wrote it
    blocks: dict[str, list[str]] = field(default_factory=dict)  # "Recommendations" -> bullets, unwrapped

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None

    def ms(self, key: str) -> float | None:
        value = self.number(key)
        return value / NS_PER_MS if value is not None else None

    @property
    def scenario(self) -> str:
        return self.values.get("Scenario", "")

    @property
    def result(self) -> str:
        return self.values.get("Result is", "missing")

    @property
    def unmet(self) -> list[str]:
        """Every condition LoadGen reports unmet, as it wrote it ("Early stopping satisfied: NO")."""
        return [self.lines[key] for key, value in self.values.items()
                if key.endswith("satisfied") and value.strip().upper() == "NO"]

    @property
    def constraints_met(self) -> bool | None:
        value = self.values.get("Performance constraints satisfied")
        return None if value is None else value.strip().lower() == "yes"

    @property
    def throughput(self) -> float | None:
        key = THROUGHPUT_KEYS.get(self.scenario)
        return self.number(key) if key else None

    @property
    def early_stopping_ms(self) -> float | None:
        for line in self.blocks.get("Early Stopping Result", []):
            match = _EARLY_STOPPING.search(line)
            if match:
                return float(match.group(1)) / NS_PER_MS
        return None

    def latency_ms(self) -> dict[str, float | None]:
        return {name: self.ms(key) for name, key in LATENCY_KEYS.items()}


def parse_summary(text: str) -> Summary:
    summary = Summary()
    block: list[str] | None = None
    for raw in text.splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("===="):
            block = None
            continue
        if block is not None and stripped.startswith("*"):
            block.append(stripped.lstrip("* ").strip())
            continue
        if block is not None and line.startswith(" ") and block:
            block[-1] += " " + stripped  # a wrapped bullet
            continue
        key, colon, value = stripped.partition(":")
        if colon and not value.strip():
            block = summary.blocks.setdefault(key.strip(), [])
            continue
        block = None
        if colon and key.strip() not in summary.values:  # the first of a repeated key is the headline one
            summary.values[key.strip()] = value.strip()
            summary.lines[key.strip()] = stripped
    return summary


def read_summary(folder: Path) -> Summary:
    """The summary LoadGen wrote in `folder`; a missing or empty file is an error (LoadGen did not finish)."""
    path = folder / SUMMARY_FILE
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    if "Result is" not in text:
        raise RuntimeError(f"LoadGen wrote no result in {path}")
    return parse_summary(text)


def read_accuracy(folder: Path) -> dict[int, list[int]]:
    """QSL index -> the int64 values of every response LoadGen logged for it (one per issue)."""
    path = folder / ACCURACY_FILE
    entries = json.loads(path.read_text(encoding="utf-8") or "[]")
    out: dict[int, list[int]] = {}
    for entry in entries:
        data = bytes.fromhex(entry["data"])
        values = [int.from_bytes(data[i:i + 8], "little", signed=True) for i in range(0, len(data) - 7, 8)]
        out.setdefault(int(entry["qsl_idx"]), []).extend(values)
    return out
