"""Timing on the host: the cold-L2 flush (between calls, never timed), the noise warning, interleaved
rounds in alternating order, and slices discarded by a veto (the throttle rule)."""

from __future__ import annotations

import statistics
import time

import torch

from resbench.suite import TimingConfig
from resbench.timing import COLD_L2_BYTES, Measurement, Sampler, measure_interleaved, noise_warnings

X = torch.zeros(4)


def test_cold_l2_flushes_before_every_call_outside_the_timed_region():
    seen: list[int] = []      # the flush buffer's first byte as each call finds it
    inside_ms: list[float] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        seen.append(int(sampler.flush_buffer[0]))
        sampler.flush_buffer[0] = 1  # the next flush must zero it again
        inside_ms.append((time.perf_counter() - t0) * 1e3)
        return x

    sampler = Sampler(fn, X, "device", "cold")
    assert sampler.flush_buffer is not None and sampler.flush_buffer.numel() == COLD_L2_BYTES

    samples = sampler.sample(7)

    assert seen == [0] * 7  # flushed before every call
    flush_ms = []
    for _ in range(3):
        t0 = time.perf_counter()
        sampler.flush_buffer.zero_()
        flush_ms.append((time.perf_counter() - t0) * 1e3)
    overhead = statistics.median(s - i for s, i in zip(samples, inside_ms, strict=True))
    # A sample is the call plus timer overhead; had the flush (writing 256 MiB) been timed, every sample
    # would exceed the call by a whole flush.
    assert overhead < statistics.median(flush_ms) / 2, (overhead, flush_ms)


def test_warm_l2_has_no_flush():
    assert Sampler(lambda x: x, X, "device", "warm").flush_buffer is None


class Scripted(Sampler):
    """A sampler whose device reports the given latencies in turn (ms), spending HOST_S of host time per
    call. The stopping rule is logic over samples and host time; scripted latencies make its decisions the
    same on an idle laptop and on a loaded 2-core CI machine (real `sleep`s there stretch 2 ms to 7 ms)."""

    HOST_S = 0.0005

    def __init__(self, *latencies_ms: float):
        super().__init__(lambda x: x, X, "device", "warm")
        self.latencies_ms, self.calls = latencies_ms, 0

    def sample(self, count: int, deadline: float | None = None) -> list[float]:
        time.sleep(self.HOST_S * count)
        out = [self.latencies_ms[(self.calls + i) % len(self.latencies_ms)] for i in range(count)]
        self.calls += count
        return out


def config(**fields) -> TimingConfig:
    base = dict(warmup_s=0.0, min_iters=10, min_time_s=0.05, max_time_s=1.0, target_rel_ci=0.25, rounds=2)
    return TimingConfig(**{**base, **fields})


def test_noise_warning_only_when_the_target_is_not_met():
    bimodal = Measurement("bimodal", Scripted(1.0, 4.0))
    steady = Measurement("steady", Scripted(2.0))
    cfg = config(max_time_s=0.3)

    measure_interleaved([bimodal, steady], cfg)

    # Half the calls take 1 ms and half 4 ms: the median's CI spans both modes, far above 25%.
    assert not bimodal.converged
    (warning,) = noise_warnings(bimodal, cfg)
    assert warning.startswith("noisy: median CI half-width ") and "> target 25.00% when max_time_s ran out" in warning
    assert steady.converged and noise_warnings(steady, cfg) == []


def test_interleaved_rounds_alternate_their_order():
    measurements = [Measurement(label, Scripted(1.0)) for label in "ABC"]
    order: list[str] = []

    measure_interleaved(measurements, config(rounds=2), on_slice=lambda m: order.append(m.label))

    assert order[:6] == ["A", "B", "C", "C", "B", "A"]


def test_vetoed_slices_are_discarded_and_flag_the_row():
    m = Measurement("A", Scripted(1.0))
    verdicts = iter([False, False])  # the first two slices "ran at a low clock"

    measure_interleaved([m], config(rounds=3), accept_slice=lambda _m, t0, t1: next(verdicts, True))

    assert len(m.discarded) >= 2 * 4  # two slices of at least ceil(min_iters / rounds) samples each
    assert len(m.samples) >= 10 and m.converged
    warnings = noise_warnings(m, config(rounds=3))
    assert any(w.startswith(f"throttled: {len(m.discarded)} of {len(m.discarded) + len(m.samples)} samples")
               for w in warnings), warnings


def test_running_out_of_time_with_the_target_met_is_not_noisy():
    m = Measurement("A", Scripted(2.0))
    cfg = config(rounds=500, min_iters=5, min_time_s=0.01, max_time_s=0.1)  # time runs out long before 500

    measure_interleaved([m], cfg)

    assert m.spent_s >= cfg.max_time_s and len(m.samples) < cfg.rounds
    assert m.converged and noise_warnings(m, cfg) == []


class Slow(Sampler):
    """Every call takes CALL_S of host time (a sleep: it does not compete for the CPU)."""

    CALL_S = 0.05

    def __init__(self) -> None:
        super().__init__(lambda x: x, X, "device", "warm")
        self.calls = 0

    def sample(self, count: int, deadline: float | None = None) -> list[float]:
        time.sleep(self.CALL_S * count)
        self.calls += count
        return [self.CALL_S * 1e3] * count


def test_max_time_s_is_a_cap_not_a_wish():
    """min_iters 200 at 50 ms a call is 10 s; max_time_s 0.2 s must stop sampling after about 0.2 s (the
    slice used to insist on min_iters / rounds = 200 calls first), and the row says what it got and why."""
    m = Measurement("slow", Slow())
    cfg = config(min_iters=200, rounds=1, min_time_s=0.1, max_time_s=0.2)
    t0 = time.perf_counter()

    measure_interleaved([m], cfg)

    assert time.perf_counter() - t0 < 2.0                  # 10 s before; a loaded machine adds sleep slack
    assert 1 <= len(m.samples) <= 8 and m.sampler.calls == len(m.samples)
    (warning,) = noise_warnings(m, cfg)
    assert f"{len(m.samples)} samples < min_iters 200" in warning and "max_time_s ran out" in warning


def test_calls_that_slow_down_mid_chunk_stop_at_max_time_s():
    """A chunk is planned from the calls so far: 1 ms calls plan ~250 more, and when the calls turn 50 ms
    the chunk ran on for ~12 s under max_time_s 0.3. The host-timed sampler now stops at the budget."""
    durations = iter([0.001] * 20 + [0.05] * 1000)
    m = Measurement("slowing", Sampler(lambda x: time.sleep(next(durations)), X, "device", "warm"))
    cfg = config(min_iters=10, rounds=1, min_time_s=0.25, max_time_s=0.3)
    t0 = time.perf_counter()

    measure_interleaved([m], cfg)

    assert time.perf_counter() - t0 < 2.0            # budget + one 50 ms call, with slack for a loaded machine
    assert any(s >= 50 for s in m.samples)           # it did meet the slow calls, and stopped among them


def test_a_call_longer_than_max_time_s_still_gives_one_sample():
    m = Measurement("slower", Slow())
    measure_interleaved([m], config(min_iters=20, rounds=5, min_time_s=0.01, max_time_s=0.01))
    assert m.samples == [Slow.CALL_S * 1e3]
