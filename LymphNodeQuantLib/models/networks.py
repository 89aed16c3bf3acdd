"""Build segmentation networks from a JSON-able description.

``architecture = {"name": "PlainConvUNet", "arguments": {...}}``: the arguments are those of
``dynamic_network_architectures``' class, with torch layer types written as strings
(``"Conv3d"``, ``"InstanceNorm3d"``, ``"LeakyReLU"``...) so the description fits in model.json.
nnU-Net v2 plans write full dotted names (``"torch.nn.modules.conv.Conv3d"``); both are accepted.
"""

from __future__ import annotations

import copy
from typing import Any

from ..errors import ModelError

#: argument name -> which kind of torch layer it names
_OP_ARGUMENTS = ("conv_op", "norm_op", "dropout_op", "nonlin")

#: short names accepted for layer types (the dotted torch path is accepted too)
_OPS = {
    "Conv2d": "torch.nn.Conv2d",
    "Conv3d": "torch.nn.Conv3d",
    "InstanceNorm2d": "torch.nn.InstanceNorm2d",
    "InstanceNorm3d": "torch.nn.InstanceNorm3d",
    "BatchNorm2d": "torch.nn.BatchNorm2d",
    "BatchNorm3d": "torch.nn.BatchNorm3d",
    "GroupNorm": "torch.nn.GroupNorm",
    "Dropout2d": "torch.nn.Dropout2d",
    "Dropout3d": "torch.nn.Dropout3d",
    "LeakyReLU": "torch.nn.LeakyReLU",
    "ReLU": "torch.nn.ReLU",
    "GELU": "torch.nn.GELU",
}

_ARCHITECTURES = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}


def _import_dotted(path: str) -> Any:
    import importlib

    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise ModelError(f"Cannot import '{path}' named in the model's architecture; check the model.json.") from error


def resolve_op(name: str | None) -> Any:
    """Torch layer class for a short (``"Conv3d"``) or dotted (``"torch.nn.Conv3d"``) name; None stays None."""
    if name is None:
        return None
    if not isinstance(name, str):
        return name  # already a class (building from Python)
    return _import_dotted(_OPS.get(name, name))


def op_name(op: Any) -> str | None:
    """Inverse of :func:`resolve_op`: the short name of a torch layer class (for writing model.json)."""
    if op is None or isinstance(op, str):
        return op
    for short, dotted in _OPS.items():
        if dotted.rsplit(".", 1)[1] == op.__name__ and op.__module__.startswith("torch.nn"):
            return short
    return f"{op.__module__}.{op.__qualname__}"


def build_network(architecture: dict):
    """Instantiate the network described by ``architecture`` (weights are random until loaded)."""
    if not isinstance(architecture, dict) or "name" not in architecture or "arguments" not in architecture:
        raise ModelError(
            "The architecture must be {'name': ..., 'arguments': {...}}; got "
            f"{sorted(architecture) if isinstance(architecture, dict) else type(architecture).__name__}."
        )
    name = architecture["name"]
    class_path = _ARCHITECTURES.get(name, name)
    if "." not in str(class_path):
        raise ModelError(f"Unknown architecture '{name}'; known: {', '.join(_ARCHITECTURES)} or a dotted class path.")
    network_class = _import_dotted(class_path)
    arguments = copy.deepcopy(dict(architecture["arguments"]))
    for key in _OP_ARGUMENTS:
        if key in arguments:
            arguments[key] = resolve_op(arguments[key])
    try:
        return network_class(**arguments)
    except (TypeError, ValueError, AssertionError) as error:
        raise ModelError(f"Cannot build {name} from the given arguments ({error}); check the model.json architecture.") from error


def plain_unet_architecture(
    *,
    input_channels: int = 1,
    num_classes: int = 2,
    features_per_stage: tuple[int, ...] = (8, 16, 32, 64),
    strides: tuple = ((1, 1, 1), (1, 2, 2), (2, 2, 2), (2, 2, 2)),
    kernel_sizes: tuple = ((1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    n_conv_per_stage: int = 2,
    deep_supervision: bool = False,
) -> dict:
    """A JSON-able PlainConvUNet description (3-D, instance norm, leaky ReLU, as nnU-Net uses)."""
    n_stages = len(features_per_stage)
    return {
        "name": "PlainConvUNet",
        "arguments": {
            "input_channels": int(input_channels),
            "n_stages": n_stages,
            "features_per_stage": [int(f) for f in features_per_stage],
            "conv_op": "Conv3d",
            "kernel_sizes": [list(k) if not isinstance(k, int) else k for k in kernel_sizes],
            "strides": [list(s) if not isinstance(s, int) else s for s in strides],
            "n_conv_per_stage": [n_conv_per_stage] * n_stages,
            "num_classes": int(num_classes),
            "n_conv_per_stage_decoder": [n_conv_per_stage] * (n_stages - 1),
            "conv_bias": True,
            "norm_op": "InstanceNorm3d",
            "norm_op_kwargs": {"eps": 1e-5, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
            "deep_supervision": bool(deep_supervision),
        },
    }


def downsampling_factor_zyx(architecture: dict) -> tuple[int, int, int]:
    """Total stride per axis: a patch size must be a multiple of it."""
    factor = [1, 1, 1]
    for stride in architecture.get("arguments", {}).get("strides", []):
        stride = [stride] * 3 if isinstance(stride, int) else list(stride)
        factor = [f * s for f, s in zip(factor, stride)]
    return tuple(factor)  # type: ignore[return-value]
