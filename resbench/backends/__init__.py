"""Backend registry. Importing this package registers every backend; each module imports its runtime
lazily (inside `available`/`prepare`), so listing backends never needs ONNX Runtime or TensorRT."""

from resbench.backends import aot_inductor, compile, eager, onnxruntime, tensorrt  # noqa: F401  (registration)
from resbench.backends.base import Backend, BackendOptions, backend_names, cast_model, get_backend, register

__all__ = ["Backend", "BackendOptions", "backend_names", "cast_model", "get_backend", "register"]
