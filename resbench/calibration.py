"""Calibration for int8 rows: the seeded images static quantization measures activation ranges on, and the
`calibration:` option of every backend with an int8 path.

- Images: N(0, 1), the same preprocessing as the timing input and the parity batch (a normalised ImageNet
  batch looks like this), drawn from their own seed (CALIBRATION_SEED_OFFSET + parity.seed). No
  calibration image is a parity image or the timing input: a quantizer calibrated on the very images it
  is judged on would look better than it is.
- Calibrating on other preprocessing is the classic int8 mistake (e.g. raw 0-255 pixels for a model fed
  normalised images: ranges 60x too wide, every activation rounds to a few levels); parity catches it
  (tests/resbench/backends/test_backend_onnxruntime_int8.py).
- Options: `samples` (images calibrated on) and `method` (the range estimator). Each runtime offers its
  own estimators, so each backend declares its `method` choices and default on a subclass of
  `CalibrationOptions`; the `calibration:` key applies to int8 rows only."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from resbench.suite import Case

CALIBRATION_SEED_OFFSET = 20_000  # parity images use 10_000 + seed, the serving QSL 30_000 + seed, timing seed
DEFAULT_SAMPLES = 32


class CalibrationOptions(BaseModel):
    """`calibration: {method: ..., samples: N}` in a backend entry; subclasses add `method`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int = Field(DEFAULT_SAMPLES, ge=1, le=4096)


def calibration_images(samples: int, image_size: int, seed: int) -> torch.Tensor:
    """The calibration set: `samples` seeded N(0, 1) images, fp32, NCHW, on the CPU."""
    generator = torch.Generator().manual_seed(CALIBRATION_SEED_OFFSET + seed)
    return torch.randn(samples, 3, image_size, image_size, generator=generator)


def case_images(case: Case, options: CalibrationOptions) -> torch.Tensor:
    """The calibration set of an int8 case: `options.samples` images at its image size, from its seed."""
    return calibration_images(options.samples, case.image_size, case.parity.seed)


def describe(method: str, samples: int) -> str:
    """'minmax over 32 seeded images': what a row's numerics say about its calibration."""
    return f"{method} over {samples} seeded images"


def numerics(weights: str, activations: str, method: str, samples: int) -> dict[str, str]:
    """What an int8 row's numbers depend on, under the numerics keys every int8 backend records."""
    return {"int8_weights": weights, "int8_activations": activations, "int8_calibration": describe(method, samples)}
