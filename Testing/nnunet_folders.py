"""nnU-Net v2 results folders with random weights, written as nnU-Net writes them (for tests)."""

import json

import numpy as np
import torch

from LymphNodeQuantLib.models.networks import build_network

# layer settings as nnU-Net v2 (>= 2.4) writes them into plans.json, shared by both architectures below
_LAYERS = {
    "conv_bias": True,
    "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
    "norm_op_kwargs": {"eps": 1e-05, "affine": True},
    "dropout_op": None,
    "dropout_op_kwargs": None,
    "nonlin": "torch.nn.LeakyReLU",
    "nonlin_kwargs": {"inplace": True},
}

# nnU-Net ResEnc M style (residual encoder blocks), tiny
RESENC_ARCH_KWARGS = {
    "n_stages": 3,
    "features_per_stage": [4, 8, 16],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[1, 3, 3], [3, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2], [2, 2, 2]],
    "n_blocks_per_stage": [1, 2, 2],
    "n_conv_per_stage_decoder": [1, 1],
    **_LAYERS,
}

PLAIN_UNET = "dynamic_network_architectures.architectures.unet.PlainConvUNet"
RESIDUAL_ENCODER_UNET = "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet"

# arch_kwargs exactly as nnU-Net v2 (>= 2.4) writes them into plans.json
ARCH_KWARGS = {
    "n_stages": 2,
    "features_per_stage": [4, 8],
    "conv_op": "torch.nn.modules.conv.Conv3d",
    "kernel_sizes": [[1, 3, 3], [3, 3, 3]],
    "strides": [[1, 1, 1], [1, 2, 2]],
    "n_conv_per_stage": [2, 2],
    "n_conv_per_stage_decoder": [2],
    **_LAYERS,
}


def make_nnunet_folder(
    root,
    folds=(0,),
    transpose=(0, 1, 2),
    seed=0,
    checkpoint_extra=None,
    fold_seeds=None,
    network_class_name=PLAIN_UNET,
    arch_kwargs=None,
):
    """``root/Dataset901_TinyLNQ/nnUNetTrainer__nnUNetPlans__3d_fullres`` with random weights; (folder, networks)."""
    arch_kwargs = ARCH_KWARGS if arch_kwargs is None else arch_kwargs
    folder = root / "Dataset901_TinyLNQ" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lymph_node": 1},
        "numTraining": 3,
        "file_ending": ".nii.gz",
    }
    plans = {
        "dataset_name": "Dataset901_TinyLNQ",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": [3.0, 2.0, 2.0],
        "original_median_shape_after_transp": [40, 96, 96],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": list(transpose),
        "transpose_backward": [int(i) for i in np.argsort(transpose)],
        "configurations": {
            "2d": {"patch_size": [96, 96], "spacing": [2.0, 2.0]},
            "3d_fullres": {
                "data_identifier": "nnUNetPlans_3d_fullres",
                "preprocessor_name": "DefaultPreprocessor",
                "batch_size": 2,
                "patch_size": [8, 32, 32],
                "median_image_size_in_voxels": [40, 96, 96],
                "spacing": [3.0, 5.0, 4.0],
                "normalization_schemes": ["CTNormalization"],
                "use_mask_for_norm": [False],
                "resampling_fn_data": "resample_data_or_seg_to_shape",
                "architecture": {
                    "network_class_name": network_class_name,
                    "arch_kwargs": arch_kwargs,
                    "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
                },
                "batch_dice": False,
            },
        },
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": 900.0,
                "mean": 35.5,
                "median": 38.0,
                "min": -400.0,
                "percentile_00_5": -120.0,
                "percentile_99_5": 280.0,
                "std": 55.0,
            }
        },
    }
    (folder / "dataset.json").write_text(json.dumps(dataset))
    (folder / "plans.json").write_text(json.dumps(plans))
    architecture = {"name": network_class_name, "arguments": {**arch_kwargs, "input_channels": 1, "num_classes": 2}}
    networks = []
    for fold in folds:
        torch.manual_seed(fold_seeds[fold] if fold_seeds else seed + fold)
        network = build_network(architecture)
        networks.append(network)
        (folder / f"fold_{fold}").mkdir()
        checkpoint = {
            "network_weights": network.state_dict(),
            "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": fold, "dataset_json": dataset},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
            **(checkpoint_extra or {}),
        }
        torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder, networks
