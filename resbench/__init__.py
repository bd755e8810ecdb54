"""resbench: benchmark ResNet-family inference across runtimes under one timing and one parity contract."""

__version__ = "0.1.0"
