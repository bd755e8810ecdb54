"""Load a checkpoint into a model, safely: `torch.load(weights_only=True)` for .pth/.pt (never a full
unpickle) and safetensors for .safetensors. Errors are one line naming the file and what is wrong.

A model whose released checkpoints differ from its state_dict in known ways (DenseNet's legacy key names,
GoogLeNet's training-only auxiliary heads) defines `adapt_state_dict(state) -> state`, applied before the
strict key check."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from resbench.errors import ModelError, one_of
from resbench.output_files import kind_of

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
# Common wrappers around a state_dict in training checkpoints.
_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        kind = kind_of(path.stat().st_mode)
    except FileNotFoundError:
        raise ModelError(f"weights file {str(path)!r} does not exist") from None
    except OSError as exc:   # a symlink loop, a permission: "does not exist" would send the user looking
        raise ModelError(f"weights file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
    if kind is not None:     # a directory, a FIFO (reading it would block), a device (/dev/zero never ends)
        raise ModelError(f"weights {str(path)!r} is {kind}; give a checkpoint file ({', '.join(SUFFIXES)})")
    if path.suffix not in SUFFIXES:
        raise ModelError(f"weights file {str(path)!r} has suffix {path.suffix!r}; {one_of(SUFFIXES)}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for a corrupt or foreign file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"weights file {str(path)!r} is not a readable checkpoint: {first_line}") from None
    for key in _WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"weights file {str(path)!r} holds no state_dict of tensors")
    # DataParallel / DDP checkpoints prefix every key with "module."
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, path: Path, model_name: str) -> nn.Module:
    """Load `path` into `model` strictly; a checkpoint of another architecture is a one-line error."""
    state = read_state_dict(path)
    adapt = getattr(model, "adapt_state_dict", None)
    if callable(adapt):
        state = adapt(state)
    own = model.state_dict()
    # Checkpoints saved before PyTorch 0.4.1 (torchvision's ResNet and DenseNet releases) have no BatchNorm
    # `num_batches_tracked`; torch's own loader fills it in, and eval-mode BN never reads it.
    state = {**{k: v for k, v in own.items() if k.endswith(".num_batches_tracked") and k not in state}, **state}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing keys (first: {missing[0]!r})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected keys (first: {unexpected[0]!r})")
        raise ModelError(f"weights file {str(path)!r} does not fit model {model_name!r}: " + ", ".join(detail))
    for key, tensor in state.items():
        if tensor.shape != own[key].shape:
            raise ModelError(
                f"weights file {str(path)!r} does not fit model {model_name!r}: {key!r} has shape "
                f"{tuple(tensor.shape)}, the model expects {tuple(own[key].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model
