"""Model specs: what a suite may name, and how each becomes an fp32 eval-mode nn.Module.

Forms: a built-in name (`resnet50`), `{name, weights: PATH}`, `torchvision:NAME`, `timm:NAME`,
`python:module:callable` (the callable returns an nn.Module, called with no arguments)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from resbench.errors import ModelError, one_of
from resbench.models import densenet, googlenet, preact_resnet, resnet, vgg
from resbench.models.random_init import randomize_
from resbench.models.weights import load_weights

# Built-in name -> constructor (torchvision's architecture, constructor's own initialisation).
BUILDERS: dict[str, Callable[[], nn.Module]] = {
    **resnet.BUILDERS,
    **{f.__name__: f for f in (preact_resnet.preact_resnet18, preact_resnet.preact_resnet50)},
    **{f.__name__: f for f in (densenet.densenet121, densenet.densenet161, densenet.densenet169,
                               densenet.densenet201)},
    "vgg16_bn": vgg.vgg16_bn,
    "googlenet": googlenet.googlenet,
}
BUILTIN_NAMES: tuple[str, ...] = tuple(BUILDERS)
PREFIXES: tuple[str, ...] = ("torchvision:", "timm:", "python:")
# Every built-in network has a total stride of 32: below 32 px its last stage convolves padding only.
MIN_IMAGE_SIZE = 32


@dataclass(frozen=True)
class ModelSpec:
    name: str                    # as written in the suite (the row's `model`)
    weights: str | None = None   # checkpoint path; None = seeded random weights

    @property
    def kind(self) -> str:
        for prefix in PREFIXES:
            if self.name.startswith(prefix):
                return prefix[:-1]
        return "builtin"


def check_model_name(name: str) -> None:
    """Raise ValueError with the allowed forms if `name` is neither a built-in nor a known prefix."""
    if name in BUILTIN_NAMES:
        return
    if name.startswith("python:"):
        if name.count(":") != 2 or not all(name.split(":")[1:]):
            raise ValueError(f"model {name!r} must look like 'python:module:callable'")
        return
    for prefix in ("torchvision:", "timm:"):
        if name.startswith(prefix):
            if not name[len(prefix):]:
                raise ValueError(f"model {name!r} names no model after {prefix!r}")
            return
    raise ValueError(
        f"unknown model {name!r}; {one_of(BUILTIN_NAMES)}, or torchvision:NAME, timm:NAME, python:module:callable"
    )


def _import(module: str, spec_name: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install raising at import (torchvision on CPU torch)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if spec_name.startswith("python:"):
            package, fix = module, "check that it is on PYTHONPATH"
        else:
            package = module.split(".")[0]   # `pip install torchvision`, not `torchvision.models`
            fix = f"install it with `pip install {package}`"
        raise ModelError(
            f"model {spec_name!r} needs the package {package!r}, which does not import here ({reason}); {fix}"
        ) from None


def construct(spec: ModelSpec) -> nn.Module:
    """The model's architecture with its constructor's own initialisation (fast; for counting)."""
    name = spec.name
    if spec.kind == "builtin":
        return BUILDERS[name]()
    if spec.kind == "torchvision":
        tv_models = _import("torchvision.models", name)
        try:
            return tv_models.get_model(name.split(":", 1)[1], weights=None)
        except ValueError as exc:
            raise ModelError(f"model {name!r}: {exc}") from None
    if spec.kind == "timm":
        timm = _import("timm", name)
        try:
            return timm.create_model(name.split(":", 1)[1], pretrained=False)
        except RuntimeError as exc:
            raise ModelError(f"model {name!r}: {exc}") from None
    _, module_name, attr = name.split(":")
    module = _import(module_name, name)
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelError(f"model {name!r}: module {module_name!r} has no callable {attr!r}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ModelError(f"model {name!r}: {attr}() returned {type(model).__name__}, not an nn.Module")
    return model


def build_model(spec: ModelSpec, seed: int = 0) -> nn.Module:
    """An fp32, eval-mode model on the CPU: the checkpoint's weights, or seeded random ones."""
    model = construct(spec)
    if spec.weights is not None:
        load_weights(model, Path(spec.weights), spec.name)
    else:
        randomize_(model, seed)
    return model.float().eval()
