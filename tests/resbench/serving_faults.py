"""Models for the serving tests (model spec `python:serving_faults:NAME`, with this folder on PYTHONPATH,
as faults.cli_env sets it up):
- `sleepy`: the tiny net of faults.py, plus SLEEP_S of sleep per call, so its capacity is known whatever
  the machine's load: at most 1 / SLEEP_S batches per second;
- `raises`: the tiny net, except that its calls from threads other than the main one (the serving SUT's
  batcher) raise RuntimeError(RAISE_MESSAGE) from the RAISE_AFTER-th on: prepare, warm-up and the schedule
  estimate (main thread) and the batcher's own warm-up pass, and the runtime fails in the middle of
  LoadGen's first run; every later run fails from its start;
- `weighty`: the tiny net carrying BALLAST_MB of extra weights, so that a runtime's private copy of the model
  (its own memory, `memory.prepare_mb`) is known to hold at least that much."""

from __future__ import annotations

import threading
import time

import torch
from faults import Tiny
from torch import nn

SLEEP_S = 0.02
RAISE_AFTER = 20      # calls off the main thread: the batcher's warm-up (3) and a few samples pass
RAISE_MESSAGE = "serving_faults.Raises: failing on purpose mid-run"
BALLAST_MB = 16


class Sleepy(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(SLEEP_S)
        return super().forward(x)


class Raises(Tiny):
    calls = 0  # per process, off the main thread: every copy of the model counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if threading.current_thread() is not threading.main_thread():
            Raises.calls += 1
            if Raises.calls > RAISE_AFTER:
                raise RuntimeError(RAISE_MESSAGE)
        return super().forward(x)


class Weighty(Tiny):
    def __init__(self) -> None:
        super().__init__()
        self.ballast = nn.Parameter(torch.ones(BALLAST_MB * 2**20 // 4))   # fp32, written: resident

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.ballast[:10]


def sleepy() -> nn.Module:
    return Sleepy()


def raises() -> nn.Module:
    return Raises()


def weighty() -> nn.Module:
    return Weighty()
