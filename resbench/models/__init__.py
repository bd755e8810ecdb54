"""Built-in CNNs (ResNets, ResNeXt, pre-activation ResNets, DenseNet, VGG-BN, GoogLeNet; torchvision-compatible
where torchvision has the model), the model-spec registry, and analytic costs."""

from resbench.models.flops import ModelCost, count_flops, count_params, model_cost
from resbench.models.registry import BUILTIN_NAMES, ModelSpec, build_model, check_model_name, construct

__all__ = [
    "BUILTIN_NAMES", "ModelCost", "ModelSpec", "build_model", "check_model_name", "construct", "count_flops",
    "count_params", "model_cost",
]
