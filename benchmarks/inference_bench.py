"""Inference engine vs MONAI's plain ``sliding_window_inference`` (and nnU-Net v2's predictor).

Same network (the packaged default model unless ``--model``), same CT, side by side in one run;
each method runs in a fresh subprocess so its peak memory (VmHWM) is its own:

* ``monai``: the plain MONAI recipe: whole CT resampled to the model spacing, z-scored,
  ``sliding_window_inference(mode="gaussian", overlap=0.5)`` over all classes, argmax, label map
  resampled back (nearest); connected components and the same minimum node volume as ours.
* ``engine-nocrop``: this engine with the mediastinum crop off (same input region as MONAI).
* ``engine``: this engine as ``lnq segment`` runs it (mediastinum crop on).
* ``nnunet``: nnU-Net v2's ``nnUNetPredictor`` on an nnU-Net results folder holding the same
  network, vs this engine on that same folder; only when ``--nnunet-python`` points at a Python
  with ``nnunetv2`` installed (it is not a dependency of this project).

Output agreement is the Dice between each method's final node mask and MONAI's. Speed is the
ratio of MONAI's wall time to each method's. Results go to the ``inference`` section of
``benchmarks/RESULTS.md``.

    python benchmarks/inference_bench.py                 # LNQ-sized CT, 114 x 512 x 512 at 3 x 0.83 x 0.83 mm
    # with nnU-Net's predictor rows, from a separate environment (nnunetv2 is no dependency of this project):
    python -m venv /tmp/nnunet-venv && /tmp/nnunet-venv/bin/pip install torch==2.13.0 nnunetv2==2.8.1 \
        connected-components-3d==4.1.1 safetensors==0.8.0
    python benchmarks/inference_bench.py --nnunet-python /tmp/nnunet-venv/bin/python
    python benchmarks/inference_bench.py --slices 600 --variants engine --section inference-600   # memory check
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def vm_hwm_mib() -> float:
    """Peak resident set of this process (MiB), from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# ---------------------------------------------------------------------------------------- workers
def worker(variant: str, ct_path: str, model: str, out_path: str, device: str) -> dict:
    import torch

    from LymphNodeQuantLib.io import read_volume
    from LymphNodeQuantLib.models.model_folder import load_model

    ct = read_volume(ct_path)
    if variant == "nnunet-predictor":
        return nnunet_predictor_worker(ct, ct_path, model, out_path, device)
    loaded = load_model(model, device=device)
    baseline = vm_rss_mib()
    started = time.perf_counter()
    if variant.startswith("engine"):
        from LymphNodeQuantLib.inference import segment_volume

        result = segment_volume(ct, loaded, device, crop_to_mediastinum=variant != "engine-nocrop", output="binary")
        mask = result.labels.array > 0
        extra = {"messages": result.messages[-1]}
    elif variant == "monai":
        from monai.inferers import sliding_window_inference

        from LymphNodeQuantLib.geometry import Volume
        from LymphNodeQuantLib.postprocess import label_instances
        from LymphNodeQuantLib.preprocessing import normalize_ct, resample_to_geometry, resample_volume

        card = loaded.card
        resampled = resample_volume(ct, card.spacing_zyx_mm, "linear")
        image = torch.from_numpy(normalize_ct(resampled.array, card.normalization))[None, None]
        with torch.inference_mode():
            logits = sliding_window_inference(
                image, card.patch_size_zyx, 2, loaded.network, overlap=0.5, mode="gaussian", sw_device=device, device="cpu"
            )
        labels = logits[0].argmax(0).to(torch.uint8).numpy()
        del logits
        back = resample_to_geometry(Volume(labels, resampled.geometry), ct.geometry, "nearest")
        instances, _ = label_instances(back.array, ct.geometry.spacing_zyx_mm, card.postprocessing["min_node_volume_mm3"])
        mask = instances > 0
        extra = {}
    else:
        raise SystemExit(f"unknown variant {variant}")
    seconds = time.perf_counter() - started
    np.save(out_path, np.packbits(mask))
    return {"variant": variant, "seconds": seconds, "peak_rss_mib": vm_hwm_mib(), "baseline_rss_mib": baseline, **extra}


def nnunet_predictor_worker(ct, ct_path: str, folder: str, out_path: str, device: str) -> dict:
    """nnU-Net v2's own predictor (needs nnunetv2), then the same small-component removal as ours."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from LymphNodeQuantLib.models.model_folder import load_model_card
    from LymphNodeQuantLib.postprocess import label_instances

    card = load_model_card(folder)
    predictor = nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=False, perform_everything_on_device=device == "cuda",
        device=torch.device(device), verbose=False, allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(folder, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    image, properties = SimpleITKIO().read_images([ct_path])
    baseline = vm_rss_mib()
    started = time.perf_counter()
    labels = predictor.predict_single_npy_array(image, properties, None, None, False)
    instances, _ = label_instances(labels == 1, ct.geometry.spacing_zyx_mm, card.postprocessing["min_node_volume_mm3"])
    seconds = time.perf_counter() - started
    np.save(out_path, np.packbits(instances > 0))
    return {"variant": "nnunet-predictor", "seconds": seconds, "peak_rss_mib": vm_hwm_mib(), "baseline_rss_mib": baseline}


def write_nnunet_folder(card, network, folder: Path) -> Path:
    """The same network as an nnU-Net v2 results folder (plans.json, dataset.json, fold_0/checkpoint_final.pth)."""
    import torch

    from LymphNodeQuantLib.models.networks import resolve_op

    folder = folder / "Dataset999_LNQPhantom" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    arguments = dict(card.architecture["arguments"])
    for key in ("conv_op", "norm_op", "dropout_op", "nonlin"):
        op = resolve_op(arguments.get(key))
        arguments[key] = None if op is None else f"{op.__module__}.{op.__qualname__}"
    for key in ("input_channels", "num_classes", "deep_supervision"):
        arguments.pop(key, None)
    clip = card.normalization.get("clip_hu", [-1024, 3071])
    linear = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(card.patch_size_zyx),
        "median_image_size_in_voxels": list(card.patch_size_zyx),
        "spacing": list(card.spacing_zyx_mm),
        "normalization_schemes": ["CTNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": linear,
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": arguments,
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    plans = {
        "dataset_name": "Dataset999_LNQPhantom",
        "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": list(card.spacing_zyx_mm),
        "original_median_shape_after_transp": list(card.patch_size_zyx),
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {"3d_fullres": configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            "0": {
                "max": float(clip[1]), "min": float(clip[0]), "median": float(card.normalization["mean"]),
                "mean": float(card.normalization["mean"]), "std": float(card.normalization["std"]),
                "percentile_00_5": float(clip[0]), "percentile_99_5": float(clip[1]),
            }
        },
    }
    dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lymph_node": 1}, "numTraining": 1, "file_ending": ".nrrd"}
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    torch.save(
        {"network_weights": network.state_dict(), "init_args": {"configuration": "3d_fullres", "fold": 0},
         "trainer_name": "nnUNetTrainer", "inference_allowed_mirroring_axes": (0, 1, 2)},
        folder / "fold_0" / "checkpoint_final.pth",
    )
    return folder


def run_worker(variant: str, ct_path: Path, model: str, work: Path, device: str, python: str = sys.executable) -> dict:
    out = work / f"{variant}.npy"
    command = [python, __file__, "--worker", variant, "--ct", str(ct_path), "--model", model, "--mask-out", str(out), "--device", device]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if completed.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["mask_file"] = str(out)
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker")
    parser.add_argument("--ct")
    parser.add_argument("--mask-out")
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=114, help="CT slices (default 114, the LNQ2023 median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--variants", default="monai,engine-nocrop,engine", help="comma-separated methods to run (monai is the reference)")
    parser.add_argument("--section", default="inference", help="RESULTS.md section to write (default: inference)")
    parser.add_argument("--nnunet-python", help="a Python with nnunetv2 installed, for the nnU-Net predictor rows")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating RESULTS.md")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.ct, args.model, args.mask_out, args.device)))
        return

    import torch

    from benchmarks.results_md import command_line, machine_description, update_section
    from LymphNodeQuantLib.io import write_volume
    from LymphNodeQuantLib.models.model_folder import load_model_card, resolve_model
    from LymphNodeQuantLib.synthetic import make_phantom

    card = load_model_card(resolve_model(args.model))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory(prefix="lnq-bench-") as work_name:
        work = Path(work_name)
        phantom = make_phantom((args.slices, 512, 512), (3.0, 0.83, 0.83), seed=args.seed)
        ct_path = write_volume(work / "ct.nrrd", phantom.ct)
        reference = phantom.full_labels.array > 0
        rows = []
        for device in devices:
            variants = ["monai"] + [v for v in args.variants.split(",") if v and v != "monai"]
            results = {variant: run_worker(variant, ct_path, args.model, work, device) for variant in variants}
            masks = {v: np.unpackbits(np.load(r["mask_file"]))[: reference.size].reshape(reference.shape).astype(bool) for v, r in results.items()}
            for variant, result in results.items():
                rows.append(
                    {
                        "device": device,
                        "variant": variant,
                        "seconds": result["seconds"],
                        "speedup": results["monai"]["seconds"] / result["seconds"],
                        "peak": result["peak_rss_mib"],
                        "added": result["peak_rss_mib"] - result["baseline_rss_mib"],
                        "agreement": dice(masks[variant], masks["monai"]),
                        "dice_ref": dice(masks[variant], reference),
                    }
                )
        nnunet_note = nnunet_rows(args, card, ct_path, work, rows, reference)

    names = {
        "monai": "MONAI `sliding_window_inference` (whole CT, plain recipe)",
        "engine-nocrop": "this engine, `--no-crop` (same region as MONAI)",
        "engine": "this engine, default (mediastinum crop)",
        "nnunet-predictor": "nnU-Net v2 `nnUNetPredictor` (same network as an nnU-Net folder)",
        "engine-nnunet": "this engine on that nnU-Net folder",
    }
    lines = [
        f"## Inference{'' if args.section == 'inference' else ' (' + args.section + ')'}: this engine vs MONAI's sliding window (`benchmarks/inference_bench.py`)",
        "",
        f"Machine: {machine_description()}.  ",
        f"Command: `{command_line()}` (from the repository root).",
        "",
        f"Model: `{card.title}` (patch {list(card.patch_size_zyx)}, spacing {list(card.spacing_zyx_mm)} mm). "
        f"CT: synthetic chest phantom {args.slices} x 512 x 512 (z, y, x) at 3 x 0.83 x 0.83 mm, seed {args.seed}. "
        "Each method runs once in its own fresh process on the same file and network; time = wall time of the "
        "segmentation call (CT already read, model loaded); peak RSS = the process's VmHWM; added = peak minus the "
        "resident set just before the call. Agreement = Dice of the final node mask with MONAI's; "
        "Dice vs truth = against the phantom's full reference.",
        "",
        "| device | method | time (s) | speed vs MONAI (x) | peak RSS (MiB) | added (MiB) | agreement with MONAI (Dice) | Dice vs truth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['device']} | {names.get(row['variant'], row['variant'])} | {row['seconds']:.1f} | {row['speedup']:.2f} | "
            f"{row['peak']:.0f} | {row['added']:.0f} | {row['agreement']:.4f} | {row['dice_ref']:.3f} |"
        )
    lines.append("")
    if "cuda" not in devices:
        lines.append("No GPU was available for this run, so there are no GPU rows.")
    lines.append(nnunet_note)
    markdown = "\n".join(lines)
    print(markdown)
    if not args.no_write:
        update_section(args.section, markdown)


def nnunet_rows(args, card, ct_path: Path, work: Path, rows: list, reference: np.ndarray) -> str:
    """nnU-Net's predictor vs this engine on one nnU-Net folder holding the same network (needs --nnunet-python)."""
    if not args.nnunet_python:
        return (
            "nnU-Net v2 rows: not run (pass `--nnunet-python` with a Python that has `nnunetv2==2.8.1`; installing it "
            "adds ~30 packages (batchgenerators, acvl-utils, scikit-image, pandas...) but leaves torch and numpy alone, "
            "so it is kept out of this project's dependencies)."
        )
    from LymphNodeQuantLib.models.model_folder import load_model

    loaded = load_model(args.model)
    folder = write_nnunet_folder(card, loaded.network, work / "nnunet")
    results = {
        "nnunet-predictor": run_worker("nnunet-predictor", ct_path, str(folder), work, "cpu", python=args.nnunet_python),
        "engine-nnunet": run_worker("engine-nnunet", ct_path, str(folder), work, "cpu"),
    }

    def unpack(path):
        return np.unpackbits(np.load(path))[: reference.size].reshape(reference.shape).astype(bool)

    reference_rows = [r for r in rows if r["variant"] == "monai" and r["device"] == "cpu"]
    monai_mask = unpack(str(work / "monai.npy"))
    nnunet_mask = unpack(results["nnunet-predictor"]["mask_file"])
    for variant, result in results.items():
        mask = unpack(result["mask_file"])
        rows.append(
            {
                "device": "cpu",
                "variant": variant,
                "seconds": result["seconds"],
                "speedup": reference_rows[0]["seconds"] / result["seconds"] if reference_rows else float("nan"),
                "peak": result["peak_rss_mib"],
                "added": result["peak_rss_mib"] - result["baseline_rss_mib"],
                "agreement": dice(mask, monai_mask),
                "dice_ref": dice(mask, reference),
                "agreement_nnunet": dice(mask, nnunet_mask),
            }
        )
    engine_vs_nnunet = rows[-1]["agreement_nnunet"]
    ratio = results["nnunet-predictor"]["seconds"] / results["engine-nnunet"]["seconds"]
    return (
        f"nnU-Net v2 rows (nnunetv2 2.8.1 in a separate environment, CPU, no mirroring, step 0.5, Gaussian): the same network "
        f"exported as an nnU-Net folder; the predictor's output gets the same small-component removal as ours. "
        f"This engine on that folder vs nnU-Net's predictor: Dice agreement {engine_vs_nnunet:.4f} (nnU-Net resamples "
        f"with third-order splines, this engine linearly), speed ratio nnU-Net/ours {ratio:.2f}x."
    )


if __name__ == "__main__":
    main()
