"""The system under test around one prepared runtime, and one LoadGen test run on it.

- QSL: every image is preprocessed (seeded N(0, 1), the run dtype and memory format) and already on the
  device before LoadGen starts, so `LoadSamplesToRam` has nothing left to do and no host copy is timed.
- SUT: LoadGen's issue callback only queues the samples (batcher.py); the batcher's thread gathers each
  batch from the QSL tensor on the device, pads it to the batch size the runtime was prepared for, runs
  it, and completes every sample with its predicted class (an int64) - the response LoadGen's accuracy
  log records. A failed batch is completed with class -1.
- Responses point into a NumPy array that stays alive until `QuerySamplesComplete` returns (LoadGen copies
  the bytes it logs during the call).

LoadGen runs in this process, on threads (`QuerySamplesComplete` from another process hangs,
mlcommons/inference#1605); torch releases the GIL inside its kernels, so LoadGen's threads keep time."""

from __future__ import annotations

import contextlib
import importlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from resbench.errors import ResbenchError
from resbench.serving.batcher import DynamicBatcher, Sample

THREAD_WARMUP_CALLS = 3   # on the batcher's thread, before LoadGen starts (batcher.py: on_start)
INSTALL_HINT = "pip install 'resbench[serving]' (mlcommons-loadgen, imported as mlperf_loadgen)"
FAILED_CLASS = -1


def loadgen() -> Any:
    """The mlperf_loadgen module; a one-line error naming the install command when it is missing."""
    try:
        return importlib.import_module("mlperf_loadgen")
    except ImportError:
        raise ResbenchError(f"serving scenarios need MLPerf LoadGen: {INSTALL_HINT}") from None


@dataclass
class RunStats:
    batches: int
    samples: int
    failed_samples: int
    error: BaseException | None
    wall_s: float


class ServingSUT:
    """One prepared runtime (`fn`, callable at exactly `batch_size`) serving the images of `qsl`."""

    def __init__(self, lg: Any, fn, qsl: torch.Tensor, batch_size: int, max_batch: int, max_wait_s: float):
        self.lg, self.fn, self.qsl, self.batch_size = lg, fn, qsl, batch_size
        self.channels_last = qsl.dim() == 4 and qsl.is_contiguous(memory_format=torch.channels_last)
        self.batcher = DynamicBatcher(self._execute, self._fail, max_batch, max_wait_s,
                                      name=f"resbench-sut-b{batch_size}", on_start=self._warm_up)

    # LoadGen's callbacks: they run on LoadGen's threads and must return at once
    def issue_queries(self, query_samples) -> None:
        now = time.monotonic()
        self.batcher.submit([Sample(q.id, q.index, now) for q in query_samples])

    def flush_queries(self) -> None:
        pass  # the batcher never holds a sample longer than max_wait

    # the batcher's thread
    @torch.no_grad()
    def _warm_up(self) -> None:
        index = torch.arange(self.batch_size, device=self.qsl.device) % self.qsl.shape[0]
        for _ in range(THREAD_WARMUP_CALLS):
            self.fn(self._layout(self.qsl.index_select(0, index)))
        if self.qsl.is_cuda:
            torch.cuda.synchronize(self.qsl.device)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    @torch.no_grad()
    def _execute(self, batch: list[Sample]) -> None:
        indices = [s.index for s in batch]
        indices += [indices[-1]] * (self.batch_size - len(indices))  # pad to the prepared shape
        index = torch.tensor(indices, dtype=torch.long).to(self.qsl.device, non_blocking=True)
        logits = self.fn(self._layout(self.qsl.index_select(0, index)))
        classes = logits[: len(batch)].argmax(dim=1).to("cpu", torch.int64).numpy()
        self._complete(batch, classes)

    def _fail(self, batch: list[Sample], _exc: BaseException) -> None:
        self._complete(batch, np.full(len(batch), FAILED_CLASS, dtype=np.int64))

    def _complete(self, batch: list[Sample], classes: np.ndarray) -> None:
        classes = np.ascontiguousarray(classes, dtype=np.int64)
        address, itemsize = classes.ctypes.data, classes.itemsize
        responses = [self.lg.QuerySampleResponse(s.id, address + i * itemsize, itemsize)
                     for i, s in enumerate(batch)]
        self.lg.QuerySamplesComplete(responses)  # `classes` is alive until this returns


def run_test(lg: Any, fn, qsl: torch.Tensor, settings: Any, outdir: Path, *, batch_size: int, max_batch: int,
             max_wait_s: float,
             window: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext) -> RunStats:
    """One LoadGen test (`settings`) of `fn` on the images `qsl`; LoadGen's logs go to `outdir`. `window()`
    is entered around LoadGen's run alone (not the SUT's set-up and warm-up): the measured window that
    the contention and memory observers watch (measure.Watch)."""
    outdir.mkdir(parents=True, exist_ok=True)
    sut = ServingSUT(lg, fn, qsl, batch_size, max_batch, max_wait_s)
    sut.batcher.started.wait()  # the warm-up on the batcher's thread is not LoadGen's to time
    count = qsl.shape[0]
    lg_sut = lg.ConstructSUT(sut.issue_queries, sut.flush_queries)
    lg_qsl = lg.ConstructQSL(count, min(count, settings.performance_sample_count_override or count),
                             _no_op, _no_op)
    log = lg.LogSettings()
    log.log_output.outdir = str(outdir)
    log.log_output.copy_summary_to_stdout = False
    log.enable_trace = False  # the trace holds every sample's events: megabytes, and nothing a row reads
    started = time.perf_counter()
    try:
        with _interrupts_end_the_run(sut.batcher) as interrupted, window():
            lg.StartTestWithLogSettings(lg_sut, lg_qsl, settings, log)
    finally:
        sut.batcher.close()
        lg.DestroyQSL(lg_qsl)
        lg.DestroySUT(lg_sut)
    if interrupted:
        raise KeyboardInterrupt(f"signal {interrupted[0]} during a LoadGen run")
    batcher = sut.batcher
    return RunStats(batcher.batches, batcher.samples, batcher.failed_samples, batcher.error,
                    time.perf_counter() - started)


@contextlib.contextmanager
def _interrupts_end_the_run(batcher: DynamicBatcher) -> Iterator[list[int]]:
    """While LoadGen runs, Ctrl-C and SIGTERM complete every remaining sample at once (batcher.abort) so
    that LoadGen returns soon, instead of raising KeyboardInterrupt inside a LoadGen callback: LoadGen issues
    from the main thread, and an exception thrown through its C++ leaves it broken (std::terminate at exit).
    Yields the signals caught; the caller raises KeyboardInterrupt once LoadGen has returned. (In a worker
    process nothing changes: the parent kills the worker.)"""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum: int, _frame: object) -> None:
        caught.append(signum)
        batcher.abort(KeyboardInterrupt(f"signal {signum}"))  # the batcher's lock is re-entrant

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


QSL_SEED_OFFSET = 30_000  # parity 10_000, int8 calibration 20_000 (calibration.py), timing 0


def _no_op(_samples) -> None:
    pass  # every image is on the device before the run (see the module docstring)


def qsl_images(count: int, image_size: int, seed: int, device: torch.device, dtype: torch.dtype,
               memory_format: torch.memory_format) -> torch.Tensor:
    """The performance QSL: `count` seeded N(0, 1) images (a normalised ImageNet image's statistics), on
    the device in the run's dtype and memory format. Its seed is its own: not the timing input's (seed),
    the parity batch's (10_000 + seed) nor the int8 calibration images' (20_000 + seed)."""
    generator = torch.Generator().manual_seed(QSL_SEED_OFFSET + seed)
    images = torch.randn(count, 3, image_size, image_size, generator=generator)
    return images.to(device=device, dtype=dtype).contiguous(memory_format=memory_format)
