"""Cold or warm: whether a TorchInductor compile was served from Inductor's caches.

A `prepare_s` of 0.1 s and one of 11 s can be the same compile of the same model: the second run of a
process finds the FX graph and AOTAutograd caches warm on disk (measured on a 2-core CPU, a conv+ReLU net:
11.4 s cold, 0.14 s warm). Every compile-based row therefore records what the caches did, and the
`cold_start` option disables them for that compile so `prepare_s` is a cold compile wherever it runs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

_COUNTERS = (("inductor", "fxgraph_cache_hit"), ("inductor", "fxgraph_cache_miss"),
             ("aot_autograd", "autograd_cache_hit"), ("aot_autograd", "autograd_cache_miss"))


def _snapshot() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {name: counters[group][name] for group, name in _COUNTERS}


def verdict(cold_start: bool, delta: dict[str, int]) -> str:
    """'cold start (caches disabled)', 'hit', 'miss', 'mixed' or 'not used', from the FX graph cache's
    counters: it holds Inductor's generated code, i.e. the codegen and C++/Triton compile that dominate a
    compile's time. The AOTAutograd cache's counters are recorded beside it, not judged (it can miss while
    the FX graph cache hits)."""
    if cold_start:
        return "cold start (caches disabled)"
    hits, misses = delta["fxgraph_cache_hit"], delta["fxgraph_cache_miss"]
    if hits and misses:
        return "mixed"
    return "hit" if hits else ("miss" if misses else "not used")


@contextlib.contextmanager
def tracked(cold_start: bool) -> Iterator[dict[str, Any]]:
    """Compile inside this block; afterwards the yielded dict holds `compile_cache` (the verdict) and the
    counters' deltas, ready to merge into a row's artifacts."""
    import torch._inductor.config as inductor_config

    record: dict[str, Any] = {}
    before = _snapshot()
    with inductor_config.patch(force_disable_caches=cold_start):
        yield record
    delta = {name: count - before[name] for name, count in _snapshot().items()}
    record["compile_cache"] = verdict(cold_start, delta)
    record.update({name: count for name, count in delta.items() if count})
