"""nnU-Net v2 trained model folders as ``--model``.

A results folder such as ``Dataset042_LNQ/nnUNetTrainer__nnUNetPlans__3d_fullres`` holds
``dataset.json``, ``plans.json`` and ``fold_N/checkpoint_final.pth``. It is read without the
``nnunetv2`` package: the network is built from the plans' ``architecture`` entry with
``dynamic-network-architectures`` (as nnU-Net does), and the plans' preprocessing is expressed as
this project's model card:

* ``spacing`` and ``patch_size`` (given in nnU-Net's transposed axis order; ``transpose_forward``
  is kept so the engine transposes the image exactly as nnU-Net does);
* ``CTNormalization``: clip to the foreground's 0.5/99.5 percentiles, then z-score with its
  mean/std (``foreground_intensity_properties_per_channel``);
* several folds are ensembled by averaging their logits, as nnU-Net's predictor does.

Differences from nnU-Net's own predictor, stated here so results can be compared honestly:
resampling is SimpleITK linear (nnU-Net: 3rd-order spline, separate z for anisotropic data),
and nnU-Net's crop-to-nonzero step is not applied (for CT it keeps the whole volume anyway).
The mediastinum crop is off for nnU-Net models (``input.crop = "none"``): they were trained on
whatever field of view their dataset had.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ModelError
from .model_folder import DEFAULT_LABELS, LoadedModel, ModelCard

CHECKPOINT_NAMES = ("checkpoint_final.pth", "checkpoint_best.pth")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise ModelError(
            f"'{path}' is missing: an nnU-Net v2 model folder needs dataset.json, plans.json and fold_N/."
        ) from error
    except json.JSONDecodeError as error:
        raise ModelError(f"'{path}' is not valid JSON ({error}).") from error


def _read_install_record(folder: Path) -> dict:
    path = folder / "lnq-install.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _configuration(plans: dict, folder: Path) -> tuple[str, dict]:
    configurations = plans.get("configurations", {})
    name = folder.name.rsplit("__", 1)[-1] if "__" in folder.name else None
    if name not in configurations:
        three_d = [n for n in ("3d_fullres", "3d_lowres") if n in configurations]
        if not three_d:
            raise ModelError(
                f"'{folder / 'plans.json'}' has no 3-D configuration (found: {', '.join(configurations) or 'none'})."
            )
        name = three_d[0]
    configuration = dict(configurations[name])
    parent = configuration.get("inherits_from")
    while parent:  # nnU-Net lets a configuration inherit from another
        base = dict(configurations[parent])
        base.update(configuration)
        configuration, parent = base, configurations[parent].get("inherits_from")
        configuration.pop("inherits_from", None)
    return name, configuration


def _fold_checkpoints(folder: Path) -> list[Path]:
    checkpoints = []
    for fold in sorted(p for p in folder.glob("fold_*") if p.is_dir()):
        for name in CHECKPOINT_NAMES:
            if (fold / name).is_file():
                checkpoints.append(fold / name)
                break
    if not checkpoints:
        raise ModelError(f"'{folder}' holds no fold_N/checkpoint_final.pth; is this an nnU-Net v2 results folder?")
    return checkpoints


def nnunet_model_card(folder: Path) -> ModelCard:
    """The preprocessing and network of an nnU-Net v2 folder, as a model card."""
    folder = Path(folder)
    dataset = _read_json(folder / "dataset.json")
    plans = _read_json(folder / "plans.json")
    configuration_name, configuration = _configuration(plans, folder)
    architecture = configuration.get("architecture")
    if not architecture or "network_class_name" not in architecture:
        raise ModelError(
            f"'{folder / 'plans.json'}' ({configuration_name}) lacks architecture.network_class_name; nnU-Net v2.4+ plans are needed."
        )
    channels = dataset.get("channel_names", dataset.get("modality", {}))
    if len(channels) != 1:
        raise ModelError(
            f"The nnU-Net model expects {len(channels)} input channels; only single-channel CT models are supported."
        )
    schemes = configuration.get("normalization_schemes", [])
    if schemes != ["CTNormalization"]:
        raise ModelError(f"The nnU-Net model uses normalisation {schemes}; only CTNormalization (CT models) is supported.")
    properties = plans.get("foreground_intensity_properties_per_channel", {}).get("0")
    if not properties:
        raise ModelError(f"'{folder / 'plans.json'}' lacks foreground_intensity_properties_per_channel['0'].")
    labels = dataset.get("labels", {})
    if any(isinstance(v, (list, tuple)) for v in labels.values()):
        raise ModelError("Region-based nnU-Net models are not supported; use a model trained with plain labels.")
    foreground = [(name, int(value)) for name, value in labels.items() if int(value) != 0]
    if not foreground:
        raise ModelError(f"'{folder / 'dataset.json'}' lists no foreground label.")
    node_labels = [item for item in foreground if "node" in item[0].lower() or "lymph" in item[0].lower()]
    _, channel = (node_labels or foreground)[0]
    transpose = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    spacing_model = [float(s) for s in configuration["spacing"]]
    spacing_zyx = [spacing_model[transpose.index(axis)] for axis in range(3)]
    arch_kwargs = dict(architecture.get("arch_kwargs", {}))
    arch_kwargs.setdefault("input_channels", 1)
    arch_kwargs.setdefault("num_classes", len(labels))
    arch_kwargs.setdefault("deep_supervision", False)
    arch_kwargs["deep_supervision"] = False  # nnU-Net predicts without deep supervision
    checkpoints = _fold_checkpoints(folder)
    installed = _read_install_record(folder)  # written by 'lnq models install'
    folds = ",".join(c.parent.name[5:] for c in checkpoints)
    card = {
        "name": installed.get("name") or f"nnunet:{plans.get('dataset_name', folder.parent.name)}:{configuration_name}",
        "version": f"{installed.get('version') or plans.get('plans_name', 'nnUNetPlans')} folds {folds}",
        "description": installed.get("recommended_use") or f"nnU-Net v2 model folder {folder}",
        "licence": installed.get("licence", ""),
        "architecture": {"name": architecture["network_class_name"], "arguments": arch_kwargs},
        "input": {
            "spacing_zyx_mm": spacing_zyx,
            "patch_size_zyx": [int(p) for p in configuration["patch_size"]],  # in nnU-Net's (transposed) order
            "transpose_forward": transpose if transpose != [0, 1, 2] else None,
            "normalization": {
                "clip_hu": [float(properties["percentile_00_5"]), float(properties["percentile_99_5"])],
                "mean": float(properties["mean"]),
                "std": max(float(properties["std"]), 1e-8),
            },
            "crop": "none",
        },
        "output": {"foreground_channel": channel},
        "labels": DEFAULT_LABELS,
        "training": {"data": f"nnU-Net dataset {plans.get('dataset_name', '?')}", "framework": "nnU-Net v2"},
        "weights": {"file": [str(c.relative_to(folder)) for c in checkpoints], "sha256": None, "size_bytes": None},
    }
    return ModelCard.from_dict(card, folder, source=str(folder / "plans.json"))


class LogitEnsemble:
    """Average the logits of several networks (nnU-Net's fold ensembling); behaves like one module."""

    def __init__(self, networks: list) -> None:
        import torch

        class _Ensemble(torch.nn.Module):
            def __init__(self, members):
                super().__init__()
                self.members = torch.nn.ModuleList(members)

            def forward(self, x):
                total = None
                for member in self.members:
                    logits = member(x)
                    total = logits if total is None else total + logits
                return total / len(self.members)

        self.module = _Ensemble(networks)


def _load_checkpoint(path: Path, messages: list) -> dict:
    import pickle

    import torch

    try:
        try:
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "weights_only" not in str(error).lower() and "weights only" not in str(error).lower():
                raise
            # nnU-Net's own predictor unpickles checkpoints fully; do the same for the folder the user chose
            checkpoint = torch.load(str(path), map_location="cpu", weights_only=False)
            messages.append(f"{path.name}: loaded with full unpickling, as nnU-Net does (only use model folders you trust).")
    except Exception as error:
        raise ModelError(f"Cannot read nnU-Net checkpoint '{path}' ({type(error).__name__}: {error}).") from error
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ModelError(f"'{path}' is not an nnU-Net v2 checkpoint (no 'network_weights').")
    return {key.removeprefix("_orig_mod."): value for key, value in checkpoint["network_weights"].items()}


def load_nnunet_model(folder: Path, device: str = "cpu") -> LoadedModel:
    """Build the plans' network, load every fold's weights (ensembled), eval mode on ``device``."""
    from .networks import build_network

    folder = Path(folder)
    card = nnunet_model_card(folder)
    messages: list[str] = []
    networks = []
    for relative in card.weights["file"]:
        network = build_network(card.architecture)
        try:
            network.load_state_dict(_load_checkpoint(folder / relative, messages), strict=True)
        except RuntimeError as error:
            raise ModelError(
                f"'{folder / relative}' does not fit the plans' architecture ({str(error).splitlines()[0]})."
            ) from error
        networks.append(network)
    network = networks[0] if len(networks) == 1 else LogitEnsemble(networks).module
    network.eval().to(device)
    card.data["load_messages"] = messages
    return LoadedModel(card=card, network=network, device=str(device), kind="nnunetv2")
