"""Serving scenarios through MLPerf LoadGen (docs/serving.md): each runtime as the system under test.

Modules, in the order data flows:
- settings.py   LoadGen TestSettings per scenario: quick floors or MLPerf's ResNet-50 rules
- batcher.py    the SUT's dynamic batcher: one thread, collects until max_batch or max_wait, always completes
- sut.py        the QSL (seeded images on the device), the SUT around one prepared runtime, one LoadGen test
- loadgen_log.py  reads what LoadGen wrote: mlperf_log_summary.txt, mlperf_log_accuracy.json
- peak.py       the Server peak search: bisection over server_target_qps
- group.py      one runtime's scenarios in one worker: prepare, run, rows
- plan.py       the runner's side: log folders and the offline batch, chosen from the latency rows
- record.py     the row's `serving` sub-record
- compare.py, recommend.py  `resbench compare` and `recommend --scenario` on serving rows
  (the serving table and plot of the reports: resbench/report/serving.py, serving_plots.py)

This package imports nothing heavy at import time: run files (record.py) load without torch or LoadGen."""
