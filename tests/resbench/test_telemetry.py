"""GPU telemetry: without a GPU or NVML everything says "not available" and nothing fails; the summary of
a case's clock samples flags throttling and low SM clocks (checked on constructed samples)."""

from __future__ import annotations

import pytest

from resbench import telemetry
from resbench.environment import fingerprint
from resbench.telemetry import GPU_IDLE, ClockSample, Monitor, summarize, warnings_for

DEFAULT_MHZ = 1755.0


def reading(sm: float, reasons: int = 0, t: float = 0.0) -> ClockSample:
    return ClockSample(t=t, sm_mhz=sm, mem_mhz=2619.0, power_w=400.0, temperature_c=50.0, reasons=reasons,
                       label="eager")


def test_a_cpu_run_never_asks_nvml():
    monitor = Monitor("cpu")
    with monitor:
        assert not monitor.available and monitor.sample_now() is None
        assert monitor.slice_ok("eager", 0.0, 1.0)
    assert monitor.summary("eager") == {"status": "not available: CPU run (NVML reports GPUs only)"}
    assert fingerprint("cpu")["nvml"].startswith("not available")


@pytest.mark.skipif(telemetry.available()[0], reason="NVML works on this machine")
def test_without_nvml_telemetry_says_not_available():
    ok, reason = telemetry.available()
    assert not ok and "NVML" in reason
    assert telemetry.gpu_environment() == {"nvml": f"not available: {reason}"}
    monitor = Monitor("cuda")
    with monitor:
        assert not monitor.available
    assert monitor.summary("eager") == {"status": f"not available: {reason}"}


def test_steady_clocks_are_not_flagged():
    summary = summarize([reading(1980), reading(1965), reading(1980)], DEFAULT_MHZ)
    assert summary["throttled"] is False and summary["reasons"] == [] and summary["low_clock_samples"] == 0
    assert summary["sm_clock_mhz"] == {"min": 1965, "median": 1980, "max": 1980}
    assert summary["samples"] == 3 and summary["power_w"]["median"] == 400.0
    assert warnings_for(summary) == []


def test_a_throttle_reason_flags_the_row():
    summary = summarize([reading(1980), reading(1900, reasons=0x20 | 0x2)], DEFAULT_MHZ)
    assert summary["throttled"] is True and summary["power_capped"] is False
    assert summary["reasons"] == ["applications_clocks_setting", "sw_thermal_slowdown"]
    assert summary["throttle_reasons"] == ["sw_thermal_slowdown"]
    assert warnings_for(summary) == ["throttled while measured: throttle reasons sw_thermal_slowdown"]


def test_the_power_cap_is_reported_apart_from_throttling():
    """A large batch on an H200 runs at its power limit by design: that is not throttling."""
    summary = summarize([reading(1980, reasons=0x4), reading(1890, reasons=0x4), reading(1980)], DEFAULT_MHZ)
    assert summary["power_capped"] is True and summary["power_cap_samples"] == 2
    assert summary["throttled"] is False and summary["throttle_reasons"] == [] and warnings_for(summary) == []
    assert summary["reasons"] == ["sw_power_cap"]
    low = summarize([reading(1980, reasons=0x4), reading(1200, reasons=0x4)], DEFAULT_MHZ)
    assert low["throttled"] is True and low["power_capped"] is True  # a cap that drags the clock low still counts


def test_a_low_clock_flags_the_row_unless_the_gpu_was_idle():
    idle_only = summarize([reading(1980), reading(345, reasons=GPU_IDLE)], DEFAULT_MHZ)
    assert idle_only["throttled"] is False  # an idle GPU lowers its clock by design

    low = summarize([reading(1980), reading(1200), reading(1980)], DEFAULT_MHZ)  # 1200 < 0.75 x 1755
    assert low["throttled"] is True and low["low_clock_samples"] == 1 and low["throttle_reasons"] == []
    (warning,) = warnings_for(low)
    assert warning == ("throttled while measured: SM clock down to 1200 MHz in 1 of 3 readings "
                       "(< 75% of the default 1755 MHz)")


def test_no_readings_is_said_not_guessed():
    assert summarize([], DEFAULT_MHZ)["status"].startswith("no samples")
