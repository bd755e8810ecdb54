"""What `resbench list` and `resbench env` show: models with their costs, backends with availability,
suites with their case counts. Each returns (columns, rows as dicts) for a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

SUITES_DIR = Path("suites")


def models() -> tuple[list[str], list[dict[str, Any]]]:
    import torch

    from resbench.models import BUILTIN_NAMES, ModelSpec, construct, model_cost

    rows = []
    for name in BUILTIN_NAMES:
        with torch.device("meta"):  # shapes only: no memory, no initialisation (VGG-16-BN: 138 M parameters)
            model = construct(ModelSpec(name))
        cost = model_cost(model, 224)
        rows.append({"model": name, "params": cost.params, "gflops_224": round(cost.gflops, 3)})
    return ["model", "params", "gflops_224"], rows


def backends(device: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    import torch

    from resbench.backends import backend_names, get_backend
    from resbench.suite import resolve_device

    resolved = torch.device(device or resolve_device("auto"))
    rows = []
    for name in backend_names():
        backend = get_backend(name)
        try:
            ok, reason = backend.available(resolved)
        except Exception as exc:  # an availability probe must never take the listing down
            ok, reason = False, f"availability check failed: {exc}"
        rows.append({
            "backend": name, "available": ok, "reason": reason, "description": backend.description,
            "options": ", ".join(backend.Options.model_fields) or "-",
        })
    return ["backend", "available", "reason", "description", "options"], rows


def suites(folder: Path = SUITES_DIR) -> tuple[list[str], list[dict[str, Any]]]:
    from resbench.errors import ResbenchError
    from resbench.suite import expand, load_suite

    rows = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            suite = load_suite(path)
            row = {"suite": str(path), "name": suite.name, "description": suite.description,
                   "cases_cuda": len(expand(suite, "cuda")), "cases_cpu": len(expand(suite, "cpu"))}
        except ResbenchError as exc:
            row = {"suite": str(path), "name": "-", "description": f"invalid: {exc}", "cases_cuda": None,
                   "cases_cpu": None}
        rows.append(row)
    return ["suite", "name", "description", "cases_cuda", "cases_cpu"], rows
