"""Checks the models a run names before any measuring, without running their code in this process.

A `python:module:callable` model (also `torchvision:` and `timm:`, whose imports can crash too) is user
code: importing it, calling its factory, loading a checkpoint into it and counting its FLOPs (which runs
its forward) happen in a short-lived checker process - the isolated worker (worker.py) given a "check"
request - followed by isolated.py's clocks. Per model, one outcome:
- checked: its params and FLOPs per image size, handed to every group's worker (counted once);
- a ResbenchError of resbench's own checks (the module does not import, has no such callable, returns no
  nn.Module; the weights file is unreadable or of another architecture): raised here, so `resbench run`
  fails before any work with one line, exit 2, as a bad suite does;
- a fault of the model's own code - the checker died (abort, segfault), overran `timing.case_timeout_s`,
  or the factory / forward raised (SystemExit included): a `ModelFault`, which gives every case of that
  model a `crashed` / `timeout` / `failed` / `oom` row without measuring it; the rest of the suite runs.
After a crash or a timeout the checker starts again for the models not checked yet.

Built-in models are resbench's own code: runner.preflight builds and counts them in-process."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resbench.errors import ModelError, ResbenchError, describe
from resbench.executors.isolated import WorkerEnd, run_child
from resbench.measure import ProgressFn, is_oom
from resbench.models import ModelCost, ModelSpec

Costs = dict[tuple[ModelSpec, int], ModelCost]
PREFIX = "model check"


@dataclass(frozen=True)
class ModelFault:
    """Why a model's cases get a row without being measured."""

    status: str    # crashed | timeout | failed | oom
    reason: str    # "model check: crashed during building model: killed by SIGABRT (last output: ...)"


def check_models(sizes: dict[ModelSpec, set[int]], timeout_s: float,
                 progress: ProgressFn = lambda _m: None) -> tuple[Costs, dict[ModelSpec, ModelFault]]:
    """Check every model of `sizes` (model -> the image sizes to count FLOPs at) in checker processes.
    Returns the costs of the models that passed and the faults of those that did not; raises the first
    ResbenchError a model's check produced."""
    specs = list(sizes)
    costs: Costs = {}
    faults: dict[ModelSpec, ModelFault] = {}
    done: set[int] = set()

    def on_message(todo: list[int], message: dict[str, Any]) -> None:
        if message["type"] != "checked":
            return
        index = todo[message["model"]]
        spec = specs[index]
        done.add(index)
        if "error" not in message:
            for size, cost in message["costs"].items():
                costs[spec, int(size)] = ModelCost(**cost)
        elif message["user_error"]:
            raise ModelError(message["error"])  # stops the checker (run_child kills it) and the run
        else:
            faults[spec] = ModelFault("oom" if message["oom"] else "failed", f"{PREFIX}: {message['error']}")

    while todo := [i for i in range(len(specs)) if i not in done]:
        request = {"check": [{"name": specs[i].name, "weights": specs[i].weights, "sizes": sorted(sizes[specs[i]])}
                             for i in todo]}
        end = run_child(request, timeout_s, _describer([specs[i] for i in todo]),
                        lambda message, todo=todo: on_message(todo, message), progress)
        if end is None:  # every verdict is in (else, as no sound checker does, never leave a model without one)
            end = WorkerEnd("crashed", "the checker finished without a verdict", None)
        culprits = [todo[end.culprit]] if end.culprit is not None else [i for i in todo if i not in done]
        for i in culprits:  # a start-up fault (no culprit) is every remaining model's: the next would meet it too
            if i not in done:
                done.add(i)
                faults[specs[i]] = ModelFault(end.status, f"{PREFIX}: {end.reason}")
    return costs, faults


def _describer(specs: list[ModelSpec]) -> Callable[[int | None, str], str]:
    def describe_stage(index: int | None, stage: str) -> str:
        name = specs[index].name if index is not None else "models"
        return f"{PREFIX} of {name}: {stage}"
    return describe_stage


# ------------------------------------------------------------------------------- in the checker process


def run_checks(request: list[dict[str, Any]], send: Callable[[dict[str, Any]], None]) -> None:
    """The checker's side (worker.py calls it): build, load and count each model, reporting each stage
    and each model's outcome."""
    from resbench.models import construct, model_cost
    from resbench.models.weights import load_weights

    send({"type": "ready"})
    for index, entry in enumerate(request):
        spec = ModelSpec(entry["name"], entry["weights"])
        stage = "building model"
        try:
            send({"type": "stage", "case": index, "stage": stage})
            model = construct(spec)
            if spec.weights is not None:
                stage = "loading weights"
                send({"type": "stage", "case": index, "stage": stage})
                load_weights(model, Path(spec.weights), spec.name)
            counted = {}
            for size in entry["sizes"]:
                stage = f"counting FLOPs at {size} px"
                send({"type": "stage", "case": index, "stage": stage})
                counted[size] = dataclasses.asdict(model_cost(model, size))
            del model
            send({"type": "checked", "model": index, "costs": counted})
        except ResbenchError as exc:
            send({"type": "checked", "model": index, "error": str(exc), "user_error": True})
        except (Exception, SystemExit) as exc:  # the model's own code may raise anything, exit included
            send({"type": "checked", "model": index, "error": f"{stage}: {describe(exc)}", "user_error": False,
                  "oom": is_oom(exc)})
