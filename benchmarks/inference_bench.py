"""Inference engine vs MONAI's plain ``sliding_window_inference`` (and nnU-Net v2's predictor).

Same network (the packaged default model unless ``--model``), same CT, side by side in one run;
each method runs in a fresh subprocess per timed repeat, so its peak memory (VmHWM) is its own:

* ``monai``: the plain MONAI recipe: whole CT resampled to the model spacing, z-scored,
  ``sliding_window_inference(mode="gaussian", overlap=0.5)`` over all classes, argmax, label map
  resampled back (nearest); connected components and the same minimum node volume as ours.
* ``monai-crop``: the same recipe on the mediastinum bounding box the engine uses
  (:func:`LymphNodeQuantLib.preprocessing.find_mediastinum_box` with the model card's
  ``crop_margin_mm``, as ``LymphNodeQuantLib/inference.py`` calls it; finding the box is timed).
* ``engine-nocrop``: this engine with the mediastinum crop off (same input region as MONAI).
* ``engine``: this engine as ``lnq segment`` runs it (mediastinum crop on).
* ``nnunet-predictor`` / ``nnunet-predictor-crop``: nnU-Net v2's ``nnUNetPredictor`` on an nnU-Net
  results folder holding the same network, on the whole CT / on the same mediastinum box, vs
  ``engine-nnunet``, this engine on that same folder; only when ``--nnunet-python`` points at a
  Python with ``nnunetv2`` installed (it is not a dependency of this project).

``monai`` vs ``monai-crop`` is the crop's share of the speed-up; ``monai-crop`` vs ``engine`` is
the engine's own (same region). Every method runs ``--repeats`` times (default 3, interleaved in
rounds so a change in machine load hits every method alike); the table gives median, min and max
wall time and the speed ratio of medians against MONAI. Every worker gets the same thread count
(``--threads``, default all cores): OpenMP/MKL/BLAS/ITK and nnU-Net's own setting
(``nnUNet_def_n_proc``) through the environment, ``torch.set_num_threads`` after the imports and,
for nnU-Net, after its predictor is built. Output agreement is the Dice between each method's final
node mask and MONAI's (whole CT). Results go to the ``inference`` section of ``benchmarks/RESULTS.md``.

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
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

#: the methods that run on the mediastinum box (all must find the same one)
CROPPED = ("monai-crop", "nnunet-predictor-crop", "engine")


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
def _worker_result(variant: str, seconds: float, mask, out_path, baseline: float, torch_threads, **extra) -> dict:
    """Save a worker's node mask (bit-packed) and report its time, memory and threads."""
    import torch

    np.save(out_path, np.packbits(mask))
    return {
        "variant": variant,
        "seconds": seconds,
        "peak_rss_mib": vm_hwm_mib(),
        "baseline_rss_mib": baseline,
        "torch_threads": torch_threads,
        "torch_threads_after": torch.get_num_threads(),
        **extra,
    }


def mediastinum_box(ct, margin_mm: float):
    """The engine's crop box: ``find_mediastinum_box`` with the model card's margin (as ``inference.py`` calls it)."""
    from LymphNodeQuantLib.anatomy import find_chest_anatomy
    from LymphNodeQuantLib.preprocessing import find_mediastinum_box

    return find_mediastinum_box(ct, margin_mm=margin_mm, anatomy=find_chest_anatomy(ct))


def region_box(ct, crop: bool, margin_mm: float) -> tuple[tuple, float]:
    """(box, seconds to find it): the mediastinum box when ``crop``, else the whole volume."""
    started = time.perf_counter()
    box = mediastinum_box(ct, margin_mm) if crop else ((0, 0, 0), tuple(ct.geometry.shape_zyx))
    return box, time.perf_counter() - started


def paste(region_mask: np.ndarray, box, shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    (z0, y0, x0), (z1, y1, x1) = box
    mask[z0:z1, y0:y1, x0:x1] = region_mask
    return mask


def monai_region_mask(region, loaded, device: str) -> np.ndarray:
    """MONAI's plain recipe on ``region`` (a Volume): node mask on the region's grid."""
    import torch
    from monai.inferers import sliding_window_inference

    from LymphNodeQuantLib.geometry import Volume
    from LymphNodeQuantLib.postprocess import label_instances
    from LymphNodeQuantLib.preprocessing import normalize_ct, resample_to_geometry, resample_volume

    card = loaded.card
    resampled = resample_volume(region, card.spacing_zyx_mm, "linear")
    image = torch.from_numpy(normalize_ct(resampled.array, card.normalization))[None, None]
    with torch.inference_mode():
        logits = sliding_window_inference(
            image, card.patch_size_zyx, 2, loaded.network, overlap=0.5, mode="gaussian", sw_device=device, device="cpu"
        )
    labels = logits[0].argmax(0).to(torch.uint8).numpy()
    del logits
    back = resample_to_geometry(Volume(labels, resampled.geometry), region.geometry, "nearest")
    instances, _ = label_instances(back.array, region.geometry.spacing_zyx_mm, card.postprocessing["min_node_volume_mm3"])
    return instances > 0


def worker(variant: str, ct_path: str, model: str, out_path: str, device: str, threads: int, margin_mm: float) -> dict:
    import torch  # noqa: F401  (imported before pin_threads, so the worker's torch is pinned)

    from benchmarks.results_md import pin_threads
    from LymphNodeQuantLib.io import read_volume

    ct = read_volume(ct_path)
    if variant.startswith("nnunet-predictor"):
        return nnunet_predictor_worker(variant, ct, ct_path, model, out_path, device, threads, margin_mm)
    from LymphNodeQuantLib.models.model_folder import load_model
    from LymphNodeQuantLib.preprocessing import crop_volume

    if variant.startswith("engine"):
        from LymphNodeQuantLib.inference import segment_volume
    elif variant in ("monai", "monai-crop"):
        import monai.inferers  # noqa: F401  (imported before the clock starts, as the engine's modules are)
    else:
        raise SystemExit(f"unknown variant {variant}")
    loaded = load_model(model, device=device)
    torch_threads = pin_threads(threads)
    baseline = vm_rss_mib()
    started = time.perf_counter()
    extra = {}
    if variant == "engine-nnunet-crop":
        # nnU-Net folders are not cropped by the engine: crop to the same box here; the anatomy filter is off, so the
        # post-processing is the one nnU-Net's predictor gets (small-component removal only)
        box, box_seconds = region_box(ct, True, margin_mm)
        region = crop_volume(ct, *box)
        result = segment_volume(region, loaded, device, crop_to_mediastinum=False, anatomy_filter=False, output="binary")
        mask = paste(result.labels.array > 0, box, ct.geometry.shape_zyx)
        extra = {"box": [list(map(int, b)) for b in box], "box_seconds": box_seconds}
    elif variant.startswith("engine"):
        result = segment_volume(ct, loaded, device, crop_to_mediastinum=variant != "engine-nocrop", output="binary")
        mask = result.labels.array > 0
        extra = {"messages": result.messages[-1], "box": [list(map(int, b)) for b in result.crop_box_zyx or ()]}
    else:
        box, box_seconds = region_box(ct, variant == "monai-crop", margin_mm)
        mask = paste(monai_region_mask(crop_volume(ct, *box), loaded, device), box, ct.geometry.shape_zyx)
        extra = {"box": [list(map(int, b)) for b in box], "box_seconds": box_seconds}
    return _worker_result(variant, time.perf_counter() - started, mask, out_path, baseline, torch_threads, **extra)


def nnunet_predictor_worker(
    variant: str, ct, ct_path: str, folder: str, out_path: str, device: str, threads: int, margin_mm: float
) -> dict:
    """nnU-Net v2's own predictor (needs nnunetv2) on the whole CT or the mediastinum box, then the same
    small-component removal as ours. Threads are pinned after nnunetv2 is imported and the predictor built."""
    import torch
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    from benchmarks.results_md import pin_threads
    from LymphNodeQuantLib.models.model_folder import load_model_card
    from LymphNodeQuantLib.postprocess import label_instances

    card = load_model_card(folder)
    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=device == "cuda",
        device=torch.device(device),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(folder, use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    image, properties = SimpleITKIO().read_images([ct_path])
    if image.shape[1:] != tuple(ct.geometry.shape_zyx):
        raise SystemExit(f"nnU-Net's reader gave {image.shape[1:]}, this project's {ct.geometry.shape_zyx}: axes differ")
    torch_threads = pin_threads(threads)
    baseline = vm_rss_mib()
    started = time.perf_counter()
    box, box_seconds = region_box(ct, variant.endswith("-crop"), margin_mm)
    (z0, y0, x0), (z1, y1, x1) = box
    region = np.ascontiguousarray(image[:, z0:z1, y0:y1, x0:x1])
    labels = predictor.predict_single_npy_array(region, dict(properties), None, None, False)
    instances, _ = label_instances(labels == 1, ct.geometry.spacing_zyx_mm, card.postprocessing["min_node_volume_mm3"])
    mask = paste(instances > 0, box, ct.geometry.shape_zyx)
    return _worker_result(
        variant,
        time.perf_counter() - started,
        mask,
        out_path,
        baseline,
        torch_threads,
        box=[list(map(int, b)) for b in box],
        box_seconds=box_seconds,
    )


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
                "max": float(clip[1]),
                "min": float(clip[0]),
                "median": float(card.normalization["mean"]),
                "mean": float(card.normalization["mean"]),
                "std": float(card.normalization["std"]),
                "percentile_00_5": float(clip[0]),
                "percentile_99_5": float(clip[1]),
            }
        },
    }
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "lymph_node": 1},
        "numTraining": 1,
        "file_ending": ".nrrd",
    }
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    torch.save(
        {
            "network_weights": network.state_dict(),
            "init_args": {"configuration": "3d_fullres", "fold": 0},
            "trainer_name": "nnUNetTrainer",
            "inference_allowed_mirroring_axes": (0, 1, 2),
        },
        folder / "fold_0" / "checkpoint_final.pth",
    )
    return folder


def run_worker(
    variant: str, ct_path: Path, model: str, out: Path, device: str, threads: int, margin_mm: float, python: str = sys.executable
) -> dict:
    from benchmarks.results_md import pinned_thread_env

    command = [
        python,
        __file__,
        "--worker",
        variant,
        "--ct",
        str(ct_path),
        "--model",
        model,
        "--mask-out",
        str(out),
        "--device",
        device,
        "--threads",
        str(threads),
        "--crop-margin-mm",
        repr(margin_mm),
    ]
    completed = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=pinned_thread_env(threads))
    if completed.returncode != 0:
        raise RuntimeError(f"{variant} failed:\n{completed.stderr[-3000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["mask_file"] = str(out)
    return result


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(a, b).sum() / total)


NAMES = {
    "monai": "MONAI `sliding_window_inference` (whole CT, plain recipe)",
    "monai-crop": "MONAI `sliding_window_inference` on the engine's mediastinum box (box finding timed)",
    "engine-nocrop": "this engine, `--no-crop` (same region as MONAI)",
    "engine": "this engine, default (mediastinum crop)",
    "nnunet-predictor": "nnU-Net v2 `nnUNetPredictor` (same network as an nnU-Net folder, whole CT)",
    "nnunet-predictor-crop": "nnU-Net v2 `nnUNetPredictor` on the engine's mediastinum box (box finding timed)",
    "engine-nnunet": "this engine on that nnU-Net folder (whole CT: no crop for nnU-Net folders)",
    "engine-nnunet-crop": "this engine on that nnU-Net folder, on the same mediastinum box (box finding timed, anatomy filter off)",
}


# ---------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker")
    parser.add_argument("--ct")
    parser.add_argument("--mask-out")
    parser.add_argument("--crop-margin-mm", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--model", default="default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--slices", type=int, default=114, help="CT slices (default 114, the LNQ2023 median)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--variants",
        default="monai,monai-crop,engine-nocrop,engine",
        help="comma-separated methods to run (monai, the reference, always runs)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method, each in a fresh process (default 3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count() or 1,
        help="threads allowed to every method, nnU-Net's predictor included (default: all cores)",
    )
    parser.add_argument("--section", default="inference", help="RESULTS.md section to write (default: inference)")
    parser.add_argument("--nnunet-python", help="a Python with nnunetv2 installed, for the nnU-Net predictor rows")
    parser.add_argument("--no-write", action="store_true", help="print the table without updating RESULTS.md")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.ct, args.model, args.mask_out, args.device, args.threads, args.crop_margin_mm)))
        return

    import torch

    from benchmarks.results_md import (
        command_line,
        format_times,
        git_state,
        load_average,
        machine_description,
        time_summary,
        update_section,
    )
    from LymphNodeQuantLib.io import write_volume
    from LymphNodeQuantLib.models.model_folder import load_model, load_model_card, resolve_model
    from LymphNodeQuantLib.synthetic import make_phantom

    git_at_start = git_state()
    load_at_start = load_average()
    print(f"1-minute load average at the start: {load_at_start:.2f}", flush=True)
    card = load_model_card(resolve_model(args.model))
    margin_mm = float(card.data["input"].get("crop_margin_mm", 20.0))  # as LymphNodeQuantLib/inference.py reads it
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    variants = ["monai"] + [v for v in args.variants.split(",") if v and v != "monai"]
    with tempfile.TemporaryDirectory(prefix="lnq-bench-") as work_name:
        work = Path(work_name)
        phantom = make_phantom((args.slices, 512, 512), (3.0, 0.83, 0.83), seed=args.seed)
        ct_path = write_volume(work / "ct.nrrd", phantom.ct)
        reference = phantom.full_labels.array > 0
        jobs = [(device, variant, args.model, sys.executable) for device in devices for variant in variants]
        if args.nnunet_python:
            folder = str(write_nnunet_folder(card, load_model(args.model).network, work / "nnunet"))
            jobs += [
                ("cpu", "nnunet-predictor", folder, args.nnunet_python),
                ("cpu", "nnunet-predictor-crop", folder, args.nnunet_python),
                ("cpu", "engine-nnunet", folder, sys.executable),
            ]
        runs: dict[tuple[str, str], list[dict]] = {(device, variant): [] for device, variant, _, _ in jobs}
        round_loads = []
        for repeat in range(args.repeats):  # rounds: every method once per round
            round_loads.append(load_average())
            for device, variant, model, python in jobs:
                out = work / f"{device}-{variant}-{repeat}.npy"
                result = run_worker(variant, ct_path, model, out, device, args.threads, margin_mm, python)
                runs[(device, variant)].append(result)
                print(
                    f"round {repeat + 1}/{args.repeats} {device} {variant}: {result['seconds']:.1f} s, "
                    f"torch threads {result['torch_threads']} -> {result['torch_threads_after']}",
                    flush=True,
                )
        load_at_end = load_average()

        def unpack(path):
            return np.unpackbits(np.load(path))[: reference.size].reshape(reference.shape).astype(bool)

        masks = {key: unpack(results[0]["mask_file"]) for key, results in runs.items()}
        stable = {
            key: all(np.array_equal(masks[key], unpack(r["mask_file"])) for r in results[1:]) for key, results in runs.items()
        }
    rows = []
    for (device, variant), results in runs.items():
        times = time_summary(r["seconds"] for r in results)
        monai = time_summary(r["seconds"] for r in runs[(device, "monai")])
        rows.append(
            {
                "device": device,
                "variant": variant,
                "times": times,
                "speedup": monai["median"] / times["median"],
                "peak": max(r["peak_rss_mib"] for r in results),
                "added": max(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in results),
                "agreement": dice(masks[(device, variant)], masks[(device, "monai")]),
                "dice_ref": dice(masks[(device, variant)], reference),
            }
        )
    threads_seen = sorted({(r["torch_threads"], r["torch_threads_after"]) for results in runs.values() for r in results})
    boxes = {tuple(map(tuple, r["box"])) for results in runs.values() for r in results if r["variant"] in CROPPED}

    lines = [
        f"## Inference{'' if args.section == 'inference' else ' (' + args.section + ')'}: this engine vs MONAI's sliding window (`benchmarks/inference_bench.py`)",
        "",
        f"Machine: {machine_description(git_at_start)}.  ",
        f"Command: `{command_line()}` (from the repository root). 1-minute load average {load_at_start:.2f} at the start, "
        f"{', '.join(f'{v:.2f}' for v in round_loads)} at the start of each round, {load_at_end:.2f} at the end "
        "(the machine is shared; above ~1 on 2 cores, other work competed).",
        "",
        f"Model: `{card.title}` (patch {list(card.patch_size_zyx)}, spacing {list(card.spacing_zyx_mm)} mm, crop margin "
        f"{margin_mm:g} mm). CT: synthetic chest phantom {args.slices} x 512 x 512 (z, y, x) at 3 x 0.83 x 0.83 mm, seed {args.seed}. "
        f"Each method runs {args.repeats} times, each time in its own fresh process, in {args.repeats} interleaved rounds "
        "(every method once per round) on the same file and network; time = wall time of the segmentation call "
        "(CT already read, model loaded or nnU-Net's predictor built, libraries imported; the first call of a process, "
        "nothing warmed up), given as "
        "median (min-max) over the repeats; speed vs MONAI = MONAI's median over the method's median. "
        f"Threads: every worker pinned to {args.threads} (OMP/MKL/OpenBLAS/ITK and nnU-Net's `nnUNet_def_n_proc` in its "
        "environment, `torch.set_num_threads` after the imports and, for nnU-Net, after its predictor is built; torch "
        f"reported {', '.join(f'{a} before / {b} after the call' for a, b in threads_seen)}). "
        "Peak RSS = the process's VmHWM, added = peak minus the resident set just before the call (both the largest "
        "over the repeats). Agreement = Dice of the final node mask with MONAI's (whole CT); Dice vs truth = against the "
        "phantom's full reference. Every method gave the same mask in every repeat: "
        f"{'yes' if all(stable.values()) else 'no (' + ', '.join(f'{d} {v}' for (d, v), ok in stable.items() if not ok) + ' differed)'}.",
        "",
        "| device | method | time (s): median (min-max) | speed vs MONAI (x, medians) | peak RSS (MiB) | added (MiB) | agreement with MONAI (Dice) | Dice vs truth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['device']} | {NAMES.get(row['variant'], row['variant'])} | {format_times(row['times'])} | {row['speedup']:.2f} | "
            f"{row['peak']:.0f} | {row['added']:.0f} | {row['agreement']:.4f} | {row['dice_ref']:.3f} |"
        )
    lines.append("")
    if "cuda" not in devices:
        lines.append("No GPU was available for this run, so there are no GPU rows.")
    lines += crop_notes(runs, masks, boxes)
    lines.append(nnunet_note(args, runs, masks))
    markdown = "\n".join(line for line in lines if line is not None)
    print(markdown)
    if not args.no_write:
        update_section(args.section, markdown)


def crop_notes(runs: dict, masks: dict, boxes: set) -> list[str]:
    """Split the default pipeline's speed-up over MONAI into the crop's share and the engine's own (CPU)."""

    def median(variant):
        return float(np.median([r["seconds"] for r in runs[("cpu", variant)]]))

    have = {variant for _, variant in runs}
    notes = []
    if len(boxes) > 1:
        notes.append(f"WARNING: the methods cropped to different boxes: {sorted(boxes)}.")
    if {"monai", "monai-crop", "engine"} <= have:
        box_seconds = float(np.median([r["box_seconds"] for r in runs[("cpu", "monai-crop")]]))
        (z0, y0, x0), (z1, y1, x1) = runs[("cpu", "monai-crop")][0]["box"]
        total, crop_share, own = (
            median("monai") / median("engine"),
            median("monai") / median("monai-crop"),
            median("monai-crop") / median("engine"),
        )
        notes.append(
            f"Where the default pipeline's speed-up comes from (CPU, ratios of medians): {total:.2f}x over MONAI on the whole CT "
            f"= {crop_share:.2f}x from the mediastinum crop alone (MONAI on the whole CT vs MONAI on the engine's box "
            f"{z1 - z0} x {y1 - y0} x {x1 - x0} voxels, box finding included: {box_seconds:.1f} s median) x {own:.2f}x from the "
            f"engine itself on the same box (MONAI on the box vs this engine, which also runs its anatomy filter). "
            f"Output on the same box: this engine vs MONAI Dice {dice(masks[('cpu', 'engine')], masks[('cpu', 'monai-crop')]):.4f}; "
            f"MONAI on the box vs MONAI on the whole CT Dice {dice(masks[('cpu', 'monai-crop')], masks[('cpu', 'monai')]):.4f} "
            "(what the crop alone changes: nodes outside the box, windows placed differently)."
        )
    if {"monai", "engine-nocrop"} <= have:
        notes.append(
            f"Without any crop (same region as MONAI): this engine at {median('monai') / median('engine-nocrop'):.2f}x MONAI's speed."
        )
    return notes


def nnunet_note(args, runs: dict, masks: dict) -> str:
    """nnU-Net's predictor vs this engine on one nnU-Net folder holding the same network (needs --nnunet-python)."""
    if not args.nnunet_python:
        return (
            "nnU-Net v2 rows: not run (pass `--nnunet-python` with a Python that has `nnunetv2==2.8.1`; installing it "
            "adds ~30 packages (batchgenerators, acvl-utils, scikit-image, pandas...) but leaves torch and numpy alone, "
            "so it is kept out of this project's dependencies)."
        )

    def median(variant):
        return float(np.median([r["seconds"] for r in runs[("cpu", variant)]]))

    whole, crop, ours = ("cpu", "nnunet-predictor"), ("cpu", "nnunet-predictor-crop"), ("cpu", "engine-nnunet")
    text = (
        f"nnU-Net v2 rows (nnunetv2 2.8.1 in a separate environment, CPU, no mirroring, step 0.5, Gaussian): the same network "
        f"exported as an nnU-Net folder; the predictor's output gets the same small-component removal as ours. "
        f"This engine on that folder (whole CT) vs nnU-Net's predictor on the whole CT: Dice agreement "
        f"{dice(masks[ours], masks[whole]):.4f} (nnU-Net resamples with third-order splines, this engine linearly), speed ratio "
        f"nnU-Net/ours {median('nnunet-predictor') / median('engine-nnunet'):.2f}x (medians). "
        f"On the mediastinum box: the crop alone makes nnU-Net's predictor {median('nnunet-predictor') / median('nnunet-predictor-crop'):.2f}x "
        f"faster (Dice {dice(masks[crop], masks[whole]):.4f} with its whole-CT output)"
    )
    if ("cpu", "engine") in runs:
        text += (
            f"; this engine's default pipeline on that box is {median('nnunet-predictor-crop') / median('engine'):.2f}x the speed of "
            f"nnU-Net's predictor on the same box (Dice {dice(masks[('cpu', 'engine')], masks[crop]):.4f} between them)"
        )
    return text + "."


if __name__ == "__main__":
    main()
