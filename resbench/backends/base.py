"""The backend contract: a small class registered by name.

- `available(device)` is cheap and side-effect free; its reason tells the user how to fix it.
- `prepare(model, example, case)` does everything that is not steady-state inference (compile, export,
  engine build, autotune, weight packing) and returns the callable that is timed. The runner times
  `prepare` as `prepare_s` and the first call separately as `first_call_s`.
- Options are a frozen pydantic model per backend (`Options`), validated when the suite loads.

The runner hands `prepare` a private fp32 copy of the model (eval mode, on the device, in the suite's
memory format) and an example input already in the run dtype and memory format. Backends cast the model
themselves with `cast_model` so that a backend that needs fp32 state first (BN folding) can have it.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict

from resbench.dtypes import is_quantized, torch_dtype
from resbench.errors import BackendError, one_of

if TYPE_CHECKING:
    from resbench.suite import Case

Forward = Callable[[torch.Tensor], torch.Tensor]


class BackendOptions(BaseModel):
    """Base of every backend's option schema: frozen, unknown keys rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # as the suite's keys


class Backend(ABC):
    """One runtime. Subclasses set `name`, `Options` and `description`, and implement the two methods."""

    name: ClassVar[str]
    description: ClassVar[str]
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    quantizes: ClassVar[bool] = False  # has an int8 path (calibrated static quantization inside prepare)

    @abstractmethod
    def available(self, device: torch.device) -> tuple[bool, str]:
        """(True, "") if this backend can run on `device`; otherwise (False, how to fix it)."""

    @abstractmethod
    def prepare(self, model: torch.nn.Module, example: torch.Tensor, case: Case) -> Forward:
        """Build the timed callable. `model` is a private fp32 copy; `example` is in the run dtype."""

    def options(self, case: Case) -> BackendOptions:
        """The case's validated options for this backend."""
        return self.Options.model_validate(case.options)

    def numerics(self, case: Case) -> dict[str, Any]:
        """Backend-specific numerics settings recorded per row (e.g. TensorRT builder flags)."""
        return {}

    def supports(self, case: Case) -> tuple[bool, str]:
        """(True, "") if this backend can run `case`; otherwise (False, why) -> a `skipped` row: an int8
        case on a backend without an int8 path (`precision_supported`), then the backend's `case_limits`."""
        ok, reason = precision_supported(self, case)
        return self.case_limits(case) if ok else (ok, reason)

    def case_limits(self, case: Case) -> tuple[bool, str]:
        """The backend's own limits known before any work that `available` cannot see because they depend
        on the case (a dtype the runtime has no kernels for, an option that needs a CUDA device). Backends
        with such limits override this; `supports` has checked the precision first."""
        return True, ""

    def __init__(self) -> None:
        self._artifacts: dict[str, Any] = {}  # set by `prepare`, read by `artifacts`

    def artifacts(self) -> dict[str, Any]:
        """What the last `prepare` produced and chose (provider, engine or package size, export and
        build times...), recorded in the row's `artifacts`."""
        return dict(self._artifacts)


def precision_supported(backend: Backend, case: Case) -> tuple[bool, str]:
    """int8 needs a backend that quantizes; every other precision is for the backend to judge."""
    if is_quantized(case.dtype) and not backend.quantizes:
        int8 = [name for name, cls in _REGISTRY.items() if cls.quantizes]
        return False, (f"{backend.name} has no {case.dtype} path (it runs the model in floating point); "
                       f"{case.dtype} runs on: {', '.join(int8)}")
    return True, ""


class PrepareError(RuntimeError):
    """`prepare` could not build the callable (export, parse or build failed). The first line of the
    message names the stage and carries the tool's own message; the runner records it as `failed`."""


def cast_model(model: torch.nn.Module, case: Case) -> torch.nn.Module:
    """The model in the case's storage dtype (tf32 stays fp32), in place."""
    return model.to(dtype=torch_dtype(case.dtype))


def private_copy(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model)


_REGISTRY: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    """Class decorator: make a backend available under `cls.name`."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"backend {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> list[str]:
    return list(_REGISTRY)


def get_backend(name: str) -> Backend:
    try:
        return _REGISTRY[name]()
    except KeyError:
        raise BackendError(f"unknown backend {name!r}; {one_of(backend_names())}") from None
