"""Models for the serving tests (model spec `python:serving_faults:NAME`, with this folder on PYTHONPATH,
as faults.cli_env sets it up):
- `sleepy`: the tiny net of faults.py, plus SLEEP_S of sleep per call, so its capacity is known whatever
  the machine's load: at most 1 / SLEEP_S batches per second;
- `raises`: the tiny net until its RAISE_AFTER-th call in a process, then RuntimeError(RAISE_MESSAGE) on
  every call: prepare, first call and warm-up pass, and the runtime fails in the middle of LoadGen's run."""

from __future__ import annotations

import time

import torch
from faults import Tiny
from torch import nn

SLEEP_S = 0.02
RAISE_AFTER = 40      # prepare (1) + warm-up (>= 10) + the schedule estimate (10) stay below it
RAISE_MESSAGE = "serving_faults.Raises: failing on purpose mid-run"


class Sleepy(Tiny):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(SLEEP_S)
        return super().forward(x)


class Raises(Tiny):
    calls = 0  # per process: every copy of the model counts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Raises.calls += 1
        if Raises.calls > RAISE_AFTER:
            raise RuntimeError(RAISE_MESSAGE)
        return super().forward(x)


def sleepy() -> nn.Module:
    return Sleepy()


def raises() -> nn.Module:
    return Raises()
