"""Which of a row's warnings make its timing doubtful, as short tags a table can show.

A row measured under contention, through noise, or on a throttled GPU has a median that may be off by
more than its CI says; reports mark such rows and the recommendation never prefers one over a clean row
without saying so. So is a partial row (`--repeat K` stopped before the K-th repetition): its median is
not the median of K runs, and the run-to-run spread the user asked for is unknown. Other warnings (parity
not checked, a timing mode fallback) are not timing doubts."""

from __future__ import annotations

import re

from resbench.results import ResultRow
from resbench.system import GPU_WARNING_PREFIX, WARNING_PREFIX

_CV = re.compile(r"^CV (\S+%)")
_PARTIAL = re.compile(r"^(\d+) of (\d+) repetitions measured")  # runner.partial_warning


def tag(warning: str) -> str | None:
    """'busy', 'GPU shared', 'noisy', 'CV 4.1%', 'throttled', '1/3 repetitions' (a partial row), or None for
    a warning that is no timing doubt."""
    if warning.startswith(WARNING_PREFIX):
        return "busy"
    if warning.startswith(GPU_WARNING_PREFIX):
        return "GPU shared"
    if warning.startswith("noisy:"):
        return "noisy"
    if warning.startswith("throttled"):
        return "throttled"
    if match := _PARTIAL.match(warning):
        return f"{match.group(1)}/{match.group(2)} repetitions"
    match = _CV.match(warning)
    return f"CV {match.group(1)}" if match else None


def doubts(row: ResultRow) -> list[str]:
    """The row's timing-doubt tags, each once, in warning order."""
    tags: list[str] = []
    for warning in row.warnings:
        found = tag(warning)
        if found is not None and found not in tags:
            tags.append(found)
    return tags


def is_clean(row: ResultRow) -> bool:
    return not doubts(row)
