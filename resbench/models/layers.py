"""Representative convolution layers of ResNet-50 at 224x224 (torchvision v1.5: the stride sits on the 3x3;
notes/kernels.md §2), one per shape class the fused kernels must handle: the 3-channel 7x7 stem, a
memory-bound 3x3, a residual 1x1, a strided 3x3, a compute-bound 3x3, the strided 1x1 downsample, and the
widest residual 1x1. GPU kernel tests and benchmarks share this one table. No torch import."""

from __future__ import annotations

from typing import NamedTuple


class ConvLayer(NamedTuple):
    label: str          # module path in the model
    channels: int       # C: input channels
    size: int           # H = W of the layer's input
    out_channels: int   # K
    kernel: int         # R = S
    stride: int
    padding: int
    residual: bool      # the block's residual add is fused into this conv


RESNET50_LAYERS: tuple[ConvLayer, ...] = (
    ConvLayer("stem", 3, 224, 64, 7, 2, 3, False),
    ConvLayer("layer1.0.conv2", 64, 56, 64, 3, 1, 1, False),
    ConvLayer("layer1.0.conv3", 64, 56, 256, 1, 1, 0, True),
    ConvLayer("layer2.0.conv2", 128, 56, 128, 3, 2, 1, False),
    ConvLayer("layer3.1.conv2", 256, 14, 256, 3, 1, 1, False),
    ConvLayer("layer4.0.downsample", 1024, 14, 2048, 1, 2, 0, False),
    ConvLayer("layer4.2.conv3", 512, 7, 2048, 1, 1, 0, True),
)
