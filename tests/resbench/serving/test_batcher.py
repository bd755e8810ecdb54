"""The SUT's dynamic batcher: batches up to max_batch, a partial batch after max_wait, every sample
completed even when the runtime raises, and submit never waits for a running batch."""

from __future__ import annotations

import threading
import time

import pytest

from resbench.serving.batcher import DynamicBatcher, Sample


class Recorder:
    """execute/fail callbacks that record what they got; `gate` holds execute until set."""

    def __init__(self, raise_on: int | None = None, gate: threading.Event | None = None):
        self.executed: list[list[int]] = []
        self.failed: list[list[int]] = []
        self.raise_on, self.gate = raise_on, gate
        self.started = threading.Event()

    def execute(self, batch: list[Sample]) -> None:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.raise_on is not None and len(self.executed) == self.raise_on:
            raise RuntimeError("runtime broke")
        self.executed.append([s.index for s in batch])

    def fail(self, batch: list[Sample], _exc: BaseException) -> None:
        self.failed.append([s.index for s in batch])


def samples(indices, arrival: float | None = None) -> list[Sample]:
    now = time.monotonic() if arrival is None else arrival
    return [Sample(id=1000 + i, index=i, arrival=now) for i in indices]


def test_samples_that_arrive_together_run_in_full_batches() -> None:
    recorder = Recorder()
    batcher = DynamicBatcher(recorder.execute, recorder.fail, max_batch=4, max_wait_s=60.0)
    batcher.submit(samples(range(11)))
    t0 = time.monotonic()
    while len(recorder.executed) < 2 and time.monotonic() - t0 < 10:
        time.sleep(0.01)
    assert recorder.executed == [[0, 1, 2, 3], [4, 5, 6, 7]]  # full batches run at once; 3 wait for company
    batcher.close(10)  # ... until close flushes them
    assert recorder.executed == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]


def test_a_partial_batch_runs_once_its_oldest_sample_waited_max_wait() -> None:
    recorder = Recorder()
    batcher = DynamicBatcher(recorder.execute, recorder.fail, max_batch=8, max_wait_s=0.2)
    submitted = time.monotonic()
    batcher.submit(samples([0, 1], arrival=submitted))
    assert recorder.started.wait(10)
    waited = time.monotonic() - submitted
    batcher.close(10)
    assert recorder.executed == [[0, 1]]
    assert waited >= 0.2  # never before max_wait (an upper bound would be flaky on a loaded machine)


def test_every_sample_is_completed_when_the_runtime_raises_and_later_batches_are_not_run() -> None:
    recorder = Recorder(raise_on=1)
    batcher = DynamicBatcher(recorder.execute, recorder.fail, max_batch=2, max_wait_s=0.0)
    for i in range(0, 10, 2):
        batcher.submit(samples([i, i + 1]))
        time.sleep(0.01)
    batcher.close(10)
    done = sorted(sum(recorder.executed, []) + sum(recorder.failed, []))
    assert done == list(range(10))
    assert len(recorder.executed) == 1 and recorder.failed  # after the error nothing ran
    assert isinstance(batcher.error, RuntimeError) and "runtime broke" in str(batcher.error)
    assert batcher.failed_samples == 10 - len(recorder.executed[0])


def test_submit_returns_while_a_batch_is_running() -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = DynamicBatcher(recorder.execute, recorder.fail, max_batch=1, max_wait_s=0.0)
    batcher.submit(samples([0]))
    assert recorder.started.wait(10)
    t0 = time.monotonic()
    batcher.submit(samples([1, 2, 3]))  # the batcher's thread is stuck in execute
    assert time.monotonic() - t0 < 1.0
    gate.set()
    batcher.close(10)
    assert recorder.executed == [[0], [1], [2], [3]]


def test_abort_completes_what_is_queued_without_running_it() -> None:
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    batcher = DynamicBatcher(recorder.execute, recorder.fail, max_batch=1, max_wait_s=0.0)
    batcher.submit(samples([0, 1, 2]))
    assert recorder.started.wait(10)
    batcher.abort(KeyboardInterrupt())
    gate.set()
    batcher.close(10)
    assert recorder.executed == [[0]] and recorder.failed == [[1], [2]]


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch 0"):
        DynamicBatcher(lambda b: None, lambda b, e: None, max_batch=0, max_wait_s=0.0)
