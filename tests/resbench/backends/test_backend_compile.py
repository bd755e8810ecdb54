"""The compile backend: options, a real TorchInductor compile on CPU with parity, and the record of
whether Inductor's caches served the compile (cold vs warm prepare_s)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from resbench.backends import get_backend
from resbench.backends.inductor_cache import verdict

ZERO = {"fxgraph_cache_hit": 0, "fxgraph_cache_miss": 0, "autograd_cache_hit": 0, "autograd_cache_miss": 0}


@pytest.mark.parametrize("delta, expected", [
    ({}, "not used"),
    ({"fxgraph_cache_hit": 1, "autograd_cache_hit": 1}, "hit"),
    ({"fxgraph_cache_hit": 1, "autograd_cache_miss": 1}, "hit"),  # the FX graph cache decides
    ({"fxgraph_cache_miss": 2}, "miss"),
    ({"fxgraph_cache_hit": 1, "fxgraph_cache_miss": 1}, "mixed"),
])
def test_cache_verdict_from_counter_deltas(delta: dict[str, int], expected: str) -> None:
    assert verdict(False, {**ZERO, **delta}) == expected
    assert verdict(True, {**ZERO, **delta}) == "cold start (caches disabled)"


def test_options_are_validated() -> None:
    options = get_backend("compile").Options
    assert options.model_validate({"mode": "max-autotune", "cold_start": True}).cold_start is True
    with pytest.raises(ValidationError, match="already replays CUDA graphs"):
        options.model_validate({"mode": "reduce-overhead", "cuda_graphs": True})
    with pytest.raises(ValidationError, match="cold_start"):
        options.model_validate({"cold_start": "sometimes"})


@pytest.mark.slow
def test_cold_start_then_warm_cache_are_recorded(tiny_model, case, example, check_parity) -> None:
    backend = get_backend("compile")

    def compile_once(**options):
        torch._dynamo.reset()  # force Dynamo to trace again, as a fresh process would
        c = case("compile", **options)
        with torch.no_grad():  # as the runner calls prepare
            fn = backend.prepare(tiny_model, example(c), c)
        return fn, c, backend.artifacts()

    fn, c, cold = compile_once(cold_start=True)
    assert cold["compile_cache"] == "cold start (caches disabled)"
    assert "fxgraph_cache_hit" not in cold
    assert check_parity(fn, c).passed

    compile_once()                      # fills the cache if it was empty
    _, _, warm = compile_once()          # the same graph again: served from the cache
    assert warm["compile_cache"] == "hit", warm
    assert warm["fxgraph_cache_hit"] >= 1
