"""resbench: benchmark ResNet-family inference across runtimes under one timing and one parity contract."""

import warnings

__version__ = "0.1.0"

# torch 2.13's torch.export emits its own pytree deprecation (`isinstance(treespec, LeafSpec)`) from inside
# torch; it is not actionable by resbench users and floods run logs (seen 2026-11 with torch 2.13.0).
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
