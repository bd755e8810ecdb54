"""The `serving` sub-record of a serving row: a LoadGen scenario's figures and verdict, as LoadGen wrote
them in its own `mlperf_log_summary.txt`, plus what resbench's SUT saw (batches, accuracy, the Server
peak search). Pydantic only: run files load without torch or LoadGen."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class LoadgenLatency(_Record):
    """Per-sample latency in ms (issue to completion, LoadGen's clock), from the summary's Additional Stats."""

    min: float | None = None
    mean: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p97: float | None = None
    p99: float | None = None
    p99_9: float | None = None
    max: float | None = None


class Batching(_Record):
    """How the SUT called the runtime: always at `batch_size` (a partial batch is padded with repeats of
    its last image, computed and discarded), as a static-shape deployment must."""

    batch_size: int                  # the batch the runtime was prepared for and called at
    max_wait_ms: float               # Server: a batch runs when full or when its oldest sample waited this long
    batches: int                     # batches run in the performance run
    samples: int                     # samples completed in the performance run
    mean_fill: float                 # samples / (batches x batch_size): 1 = no padding
    batch_ms: float                  # one batch's latency, sampled before the run (the schedule hints)
    choice: str = ""                 # offline: where the batch size came from


class Accuracy(_Record):
    """LoadGen's accuracy mode on the parity images: each response's predicted class (from
    mlperf_log_accuracy.json) against the top-1 of the fp64 (or fp32) reference."""

    reference: str
    samples: int                     # parity images in the QSL
    responses: int                   # entries LoadGen logged
    top1_agree: float                # fraction of samples whose logged class is the reference's top-1
    mismatched: list[int] = Field(default_factory=list)   # QSL indices that disagree (or got no response)
    log_dir: str


class Probe(_Record):
    """One Server run of the peak search."""

    target_qps: float
    completed_qps: float | None      # LoadGen's "Completed samples per second"
    p99_ms: float | None
    held: bool                       # LoadGen's "Performance constraints satisfied" (p99 <= the bound)
    result: str                      # VALID | INVALID
    log_dir: str


class PeakSearch(_Record):
    method: Literal["bisection"] = "bisection"
    precision: float                 # stops once the highest held QPS is within this of the lowest missed
    peak_qps: float | None           # the highest target QPS that held the bound; None: none did
    probes: list[Probe] = Field(default_factory=list)


class ServingRecord(_Record):
    scenario: str                    # single-stream | server | offline
    compliant: bool                  # true only with MLPerf's ResNet-50 rules unchanged (mlperf.conf)
    result: str                      # LoadGen's verdict: VALID | INVALID
    unmet: list[str] = Field(default_factory=list)          # e.g. "Min duration satisfied : NO", verbatim
    recommendations: list[str] = Field(default_factory=list)  # LoadGen's, verbatim
    samples_per_s: float | None = None   # single-stream: "QPS w/o loadgen overhead"; server: "Completed samples
                                         # per second"; offline: "Samples per second"
    latency_ms: LoadgenLatency = Field(default_factory=LoadgenLatency)
    early_stopping_ms: float | None = None   # single-stream: LoadGen's early-stopping p90 estimate
    target_qps: float | None = None      # server: the schedule's QPS (the peak when searched)
    scheduled_qps: float | None = None   # server: "Scheduled samples per second"
    latency_bound_ms: float | None = None  # server: the p99 bound
    bound_held: bool | None = None       # server: "Performance constraints satisfied"
    min_duration_s: float                # LoadGen's floors, as its summary states them
    min_queries: int                     # (Offline: 1 query of `samples_per_query` samples)
    samples_per_query: int = 1
    batching: Batching
    accuracy: Accuracy | None = None
    peak: PeakSearch | None = None
    log_dir: str                         # LoadGen's logs of this row, relative to the run file's folder
    summary_file: str                    # the mlperf_log_summary.txt these figures were copied from (same)

    @property
    def headline(self) -> tuple[str, float | None]:
        """The scenario's figure of merit: (name, value)."""
        if self.scenario == "single-stream":
            return "p90 ms", self.latency_ms.p90
        if self.scenario == "server":
            return "QPS", self.samples_per_s
        return "samples/s", self.samples_per_s
