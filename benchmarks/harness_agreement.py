"""Does resbench's timer agree with independent ones? One prepared callable, three timers, back to back.

    python benchmarks/harness_agreement.py                       # ResNet-50, eager, batch 1, CPU: < 1 min
    python benchmarks/harness_agreement.py --backend onnxruntime --json agreement.json

The callable is prepared exactly as `resbench run` prepares it (the backend's `prepare` on a private copy
of the model, the run's thread policy, the seeded timing input), then timed by
- resbench: `timing.Sampler` in `device` mode with warm-up and the stopping rule (one call per sample);
- torch.utils.benchmark: `Timer.blocked_autorange` (blocks of calls, the median of the block means);
- a plain loop: `time.perf_counter()` around each call (plus a synchronize on a GPU), the median.
in ROUNDS alternating rounds (A B C, C B A, ...) so drift hits all three alike. Each timer's figure is the
median of its round medians; the ratios to resbench's figure are printed. On a quiet machine they agree
within a few percent (ResNet-50 eager, batch 1, 2 cores: 30.2 ms, within 3% of torch.utils.benchmark).

The machine is watched while each timer runs (resbench/system.py): when other processes used the cores,
the script says so, and the ratios say more about them than about the timers."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from resbench import system  # noqa: E402
from resbench import threads as thread_policy  # noqa: E402
from resbench.backends import get_backend  # noqa: E402
from resbench.backends.base import private_copy  # noqa: E402
from resbench.measure import timing_input  # noqa: E402
from resbench.models import ModelSpec, build_model  # noqa: E402
from resbench.suite import expand, parse_suite  # noqa: E402
from resbench.timing import Measurement, Sampler, measure_interleaved, synchronize, warmup  # noqa: E402

Timer = Callable[[Callable[[torch.Tensor], torch.Tensor], torch.Tensor, float], tuple[float, int]]


def resbench_timer(fn, x: torch.Tensor, seconds: float) -> tuple[float, int]:
    from resbench.suite import TimingConfig

    sampler = Sampler(fn, x, "device", "warm")
    warmup(sampler, 0.3)
    m = Measurement("agreement", sampler)
    measure_interleaved([m], TimingConfig(warmup_s=0.3, min_iters=10, min_time_s=seconds, max_time_s=seconds,
                                          target_rel_ci=1e-6, rounds=1))
    return statistics.median(m.samples), len(m.samples)


def blocked_autorange_timer(fn, x: torch.Tensor, seconds: float) -> tuple[float, int]:
    from torch.utils.benchmark import Timer as TorchTimer

    # Timer's num_threads defaults to 1 and it sets torch's pool to that while timing: on 2 cores that read
    # 1.67x slower than resbench and a plain loop (88.3 vs 52.8 ms, ResNet-50 batch 1, 2026-11-30). Same pool.
    measurement = TorchTimer(stmt="fn(x)", globals={"fn": fn, "x": x},
                             num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=seconds)
    return measurement.median * 1e3, measurement.number_per_run * len(measurement.raw_times)


def plain_loop_timer(fn, x: torch.Tensor, seconds: float) -> tuple[float, int]:
    samples = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(samples) < 10:
        t0 = time.perf_counter()
        fn(x)
        synchronize(x.device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples), len(samples)


TIMERS: dict[str, Timer] = {"resbench": resbench_timer, "blocked_autorange": blocked_autorange_timer,
                            "plain loop": plain_loop_timer}


def prepared_callable(model: str, backend: str, batch: int, image_size: int, device: str):
    """The backend's callable and its input, prepared as `resbench run` prepares them."""
    suite = parse_suite(json.dumps({"name": "agreement", "models": [model], "backends": [backend],
                                    "batch_sizes": [batch], "dtypes": ["fp32"], "image_size": image_size}))
    (case,) = expand(suite, device)
    ok, why = get_backend(backend).available(torch.device(device))
    if not ok:
        sys.exit(f"error: backend {backend!r} cannot run here: {why}")
    thread_policy.apply(thread_policy.resolve(case.threads))
    x = timing_input(case)
    layout = torch.channels_last if case.memory_format == "channels_last" else torch.contiguous_format
    copy = private_copy(build_model(ModelSpec(model))).to(device).to(memory_format=layout)
    with torch.no_grad():
        fn = get_backend(backend).prepare(copy, x, case)

    def call(inputs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return fn(inputs)

    return call, x


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50", help="model name, as in a suite (default resnet50)")
    parser.add_argument("--backend", default="eager", help="backend name (default eager)")
    parser.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    parser.add_argument("--image-size", type=int, default=224, help="image size in px (default 224)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cpu", "cuda"),
                        help="default cuda if available, else cpu")
    parser.add_argument("--seconds", type=float, default=5.0, help="time per timer per round (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)

    print(f"preparing {args.model} {args.backend} batch {args.batch} {args.image_size}px on {args.device} ...",
          flush=True)
    fn, x = prepared_callable(args.model, args.backend, args.batch, args.image_size, args.device)
    names = list(TIMERS)
    medians: dict[str, list[float]] = {name: [] for name in names}
    counts: dict[str, int] = dict.fromkeys(names, 0)
    meter = system.CpuMeter()
    for round_index in range(args.rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            meter.start()
            median, n = TIMERS[name](fn, x, args.seconds)
            meter.stop()
            medians[name].append(median)
            counts[name] += n
            print(f"  round {round_index + 1}: {name:<18} median {median:9.3f} ms  ({n} calls)", flush=True)

    figures = {name: statistics.median(values) for name, values in medians.items()}
    base = figures["resbench"]
    print(f"\n{'timer':<18} {'median ms':>10} {'calls':>7} {'ratio to resbench':>18}")
    for name in names:
        print(f"{name:<18} {figures[name]:>10.3f} {counts[name]:>7} {figures[name] / base:>18.3f}")
    window = meter.window
    cores = len(meter.cores)
    load = system.cpu_warnings(window, cores, torch.get_num_threads())
    print(f"\nmachine while timed: other processes used {window.cores(window.other_s):.2f} of {cores} cores, "
          f"this process {window.cores(window.own_s):.2f}; threads {torch.get_num_threads()}")
    for warning in load:
        print(f"WARNING: {warning}: the ratios are not a statement about the timers")
    if args.json is not None:
        args.json.write_text(json.dumps({
            "model": args.model, "backend": args.backend, "batch": args.batch, "image_size": args.image_size,
            "device": args.device, "threads": torch.get_num_threads(), "seconds": args.seconds,
            "rounds": args.rounds, "medians_ms": medians, "figure_ms": figures,
            "ratio_to_resbench": {name: figures[name] / base for name in names},
            "system": system.cpu_record(window, cores, torch.get_num_threads()), "warnings": load,
            "torch": torch.__version__,
        }, indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
