"""torchao backend: int8 only, x86 CPU only; the PT2E pipeline before compilation (strict export, the
X86InductorQuantizer, calibration, convert) on the tiny ResNet, judged by the parity verdict: a sound
calibration passes, a calibration on the wrong preprocessing FAILS. The compiled path (one torch.compile)
is exercised end to end by tests/resbench/test_int8_rows.py."""

from __future__ import annotations

import pytest
import torch

from resbench.backends import get_backend
from resbench.backends import torchao as torchao_backend

pytest.importorskip("torchao", reason="torchao not installed (pip install 'resbench[torchao]')")


def test_only_int8_rows_and_only_on_a_cpu(make_case):
    backend = get_backend("torchao")
    ok, reason = backend.supports(make_case("torchao", "fp32"))
    assert not ok and "torchao rows are int8" in reason and "compile backend" in reason
    assert backend.supports(make_case("torchao", "int8")) == (True, "")
    ok, reason = backend.available(torch.device("cuda"))
    assert not ok and "x86 CPUs" in reason and "tensorrt" in reason


def test_minmax_swaps_only_the_activation_observer():
    observers = pytest.importorskip("torchao.quantization.pt2e")
    _, histogram = torchao_backend._quantizer("histogram")
    _, minmax = torchao_backend._quantizer("minmax")
    default, swapped = histogram.global_config, minmax.global_config
    assert default.input_activation.observer_or_fake_quant_ctr.p.func is observers.HistogramObserver
    assert swapped.input_activation.observer_or_fake_quant_ctr.p.func is observers.MinMaxObserver
    assert swapped.output_activation == swapped.input_activation
    assert swapped.weight == default.weight and default.weight.qscheme == torch.per_channel_symmetric


def _judge(make_case, tiny_model, example, check_parity, method: str = "histogram"):
    case = make_case("torchao", "int8", batch_size=2, calibration={"method": method, "samples": 16})
    options = get_backend("torchao").options(case).calibration
    quantized = torchao_backend.quantize(tiny_model, example(case), case, options)
    return quantized, check_parity(quantized.graph, case)


@pytest.mark.parametrize("method", ["histogram", "minmax"])
def test_sound_calibration_quantizes_every_conv_and_passes_parity(make_case, tiny_model, example, check_parity,
                                                                  method):
    quantized, verdict = _judge(make_case, tiny_model, example, check_parity, method)
    # input of the stem, of each conv and of the classifier quantized; weights of 4 convs + fc dequantized
    assert quantized.qdq["quantize"] >= 5 and quantized.qdq["dequantize"] >= 10, quantized.qdq
    assert verdict.passed, verdict.rule


def test_calibrating_on_unnormalised_pixels_fails_parity(make_case, tiny_model, example, check_parity,
                                                         calibrate_on_raw_pixels):
    _, verdict = _judge(make_case, tiny_model, example, check_parity)
    assert not verdict.passed and verdict.rule.startswith("int8 FAILS: "), verdict.rule
