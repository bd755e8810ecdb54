"""The Server peak search: the highest `server_target_qps` whose p99 latency stays under the bound.

A bisection over the target QPS, each probe one LoadGen PerformanceOnly run, rather than LoadGen's own
`TestMode.FindPeakPerformance`, because:
- it is bounded: at most MAX_PROBES runs. FindPeakPerformance doubles the QPS until a run fails, then
  bisects down to `server_find_peak_qps_decimals_of_precision` (0.1 QPS by default: ten or more
  runs of min_duration each), with no cap on either phase;
- it searches down as well as up: FindPeakPerformance gives up when its starting QPS misses the bound;
- every probe keeps its own summary file, and every probe's (QPS, p99) is a point of the row's
  latency-vs-QPS curve; FindPeakPerformance writes one summary, for its final run only.
The verdict of each probe is LoadGen's own ("Performance constraints satisfied": p99 <= the bound).

The search starts at the runtime's full-batch throughput (an upper bound on what a batching server can
sustain), halves until a probe holds, doubles until one misses, then bisects geometrically (QPS spans
decades) until the highest held QPS is within PRECISION of the lowest missed one."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

PRECISION = 0.10      # stop once lowest-missed / highest-held <= 1.10
MAX_PROBES = 8        # LoadGen runs per search, whatever happens
MAX_HALVINGS = 5      # below start / 32, give up: the bound is tighter than one batch's latency


@dataclass(frozen=True)
class ProbeOutcome:
    target_qps: float
    held: bool


def search(probe: Callable[[float], bool], start_qps: float, precision: float = PRECISION,
           max_probes: int = MAX_PROBES, max_halvings: int = MAX_HALVINGS) -> tuple[float | None, list[ProbeOutcome]]:
    """(the highest target QPS that held, or None; every probe in order). `probe(qps)` runs one LoadGen
    test at `qps` and says whether the bound held; it may raise, which ends the search. `max_halvings` 0:
    when the first probe misses, search no lower (the caller knows no lower load can hold the bound)."""
    if not start_qps > 0:
        raise ValueError(f"start_qps {start_qps} must be > 0")
    probes: list[ProbeOutcome] = []
    held: float | None = None
    missed: float | None = None

    def run(qps: float) -> bool:
        """Probe `qps` and move the bracket: it becomes the highest held or the lowest missed QPS."""
        nonlocal held, missed
        outcome = ProbeOutcome(qps, probe(qps))
        probes.append(outcome)
        if outcome.held:
            held = qps
        else:
            missed = qps
        return outcome.held

    qps = start_qps
    if run(qps):
        while missed is None and len(probes) < max_probes:
            qps *= 2
            run(qps)
    else:
        halvings = 0
        while held is None and halvings < max_halvings and len(probes) < max_probes:
            qps /= 2
            halvings += 1
            run(qps)
    while held is not None and missed is not None and missed / held > 1 + precision and len(probes) < max_probes:
        run(math.sqrt(held * missed))
    return held, probes
