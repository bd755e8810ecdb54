"""Backend registry. Importing this package registers every backend; each module imports its runtime
lazily (inside `available`/`prepare`), so listing backends never needs ONNX Runtime or TensorRT.

Registration order is listing order: the eager baseline, the PyTorch compilers, resbench's own kernels,
then the deployment runtimes."""

# isort: off
from resbench.backends import eager, compile, triton, aot_inductor, torchao  # noqa: F401
from resbench.backends import onnxruntime, openvino, tensorrt  # noqa: F401
# isort: on
from resbench.backends.base import Backend, BackendOptions, backend_names, cast_model, get_backend, register

__all__ = ["Backend", "BackendOptions", "backend_names", "cast_model", "get_backend", "register"]
