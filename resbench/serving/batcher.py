"""The SUT's dynamic batcher: LoadGen's issue callback hands samples over and returns at once; one thread
collects them into batches and runs them.

Policy (Triton Inference Server's dynamic batcher, and what an MLPerf Server SUT does): a batch runs as
soon as it holds `max_batch` samples, or once its oldest sample has waited `max_wait_s`, whichever comes
first. SingleStream uses max_batch 1 (every sample at once); Offline uses no wait (LoadGen issues every
sample in one call, so batches are full but the last).

Every sample submitted is completed, whatever happens: a batch whose execution raises is handed to
`fail` (which completes it with an error response), and so is every later batch, at once, without
running it, so LoadGen's run ends on schedule instead of hanging on a dropped sample (mlcommons/inference
#2389) or waiting on a runtime that is known to be broken. The first error is kept for the row.

`on_start` runs first on the batcher's thread (the SUT warms the runtime up there: CUDA graph trees and
some runtimes keep per-thread state, which would otherwise be built during the timed run).

`submit` never blocks beyond a short lock: the issue callback runs on LoadGen's issuing thread, and any
time spent in it delays the next query of the schedule (MLPerf's Server rules forbid exactly that)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    id: int            # LoadGen's response id
    index: int         # the QSL index of the image
    arrival: float     # time.monotonic() when submitted


Execute = Callable[[list[Sample]], None]
Fail = Callable[[list[Sample], BaseException], None]


class DynamicBatcher:
    def __init__(self, execute: Execute, fail: Fail, max_batch: int, max_wait_s: float, name: str = "batcher",
                 on_start: Callable[[], None] | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch} must be >= 1")
        self.execute, self.fail = execute, fail
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.error: BaseException | None = None   # the first exception a batch raised
        self.batches = 0                          # batches executed (not failed)
        self.samples = 0                          # samples executed
        self.failed_samples = 0                   # samples completed with an error response
        self._queue: deque[Sample] = deque()
        self._ready = threading.Condition(threading.RLock())  # re-entrant: abort() may run in a signal handler
        self._closing = False
        self._on_start = on_start
        self.started = threading.Event()  # set once `on_start` has run on the batcher's thread
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, samples: Iterable[Sample]) -> None:
        with self._ready:
            self._queue.extend(samples)
            self._ready.notify()

    def abort(self, exc: BaseException) -> None:
        """Run nothing more: complete every queued and later sample with an error response at once."""
        with self._ready:
            if self.error is None:
                self.error = exc
            self._ready.notify()

    def close(self, timeout: float | None = None) -> None:
        """Run (or fail) what is queued, then stop the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def _next_batch(self) -> list[Sample] | None:
        with self._ready:
            while not self._queue:
                if self._closing:
                    return None
                self._ready.wait()
            if self.error is None:  # after an error nothing is run, so nothing is worth waiting for
                deadline = self._queue[0].arrival + self.max_wait_s
                while len(self._queue) < self.max_batch and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._ready.wait(remaining)
            count = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(count)]

    def _loop(self) -> None:
        try:
            if self._on_start is not None:
                self._on_start()
        except BaseException as exc:  # noqa: BLE001 - a runtime that cannot start fails every sample
            self.error = exc
        finally:
            self.started.set()
        while (batch := self._next_batch()) is not None:
            if self.error is not None:
                self._fail(batch, self.error)
                continue
            try:
                self.execute(batch)
            except BaseException as exc:  # noqa: BLE001 - any failure must still complete the batch
                self.error = exc
                self._fail(batch, exc)
                continue
            self.batches += 1
            self.samples += len(batch)

    def _fail(self, batch: list[Sample], exc: BaseException) -> None:
        self.failed_samples += len(batch)
        try:
            self.fail(batch, exc)
        except BaseException:  # noqa: BLE001 - the fail path must not kill the thread; nothing better to do
            pass
