"""An nnU-Net v2 residual-encoder (ResEnc-M) model: this engine vs nnU-Net v2's own predictor, one fold.

The network is the one nnU-Net's own ``nnUNetPlannerResEncM`` plans for chest CTs with the geometry of
the three LIDC-IDRI scans in ``../shared/data/real/lidc-idri/`` (their spacings and sizes make the
dataset fingerprint; the planner picks patch size, target spacing and the 6-stage residual encoder),
written as an nnU-Net v2 results folder (``plans.json``, ``dataset.json``,
``fold_0/checkpoint_final.pth``) with random weights of that architecture (seed 0): speed does not
depend on the weights. CT: a synthetic chest phantom of 140 x 512 x 512 (z, y, x) voxels at
2.5 x 0.7 x 0.7 mm.

* ``nnunet-predictor-crop``: ``nnUNetPredictor`` (step 0.5, Gaussian, no mirroring) on the engine's
  mediastinum box (finding the box is timed);
* ``engine-nnunet-crop``: this engine on the same folder and the same box.

On a CPU both run on the mediastinum box only: a whole 512 x 512 x 140 CT is about four times as many
windows of this 102-million-parameter network (over an hour per run on 2 cores); on a GPU
(``cuda`` available) both also run on the whole CT. Methods run in fresh processes, interleaved in
rounds (``--repeats``, default 3), every process pinned to the same threads; the section of
``benchmarks/RESULTS.md`` is rewritten after every round, so an interrupted run still reports the
rounds it finished (and says so).

    python benchmarks/resenc_bench.py --nnunet-python /tmp/nnunet-venv/bin/python

(the nnU-Net environment as in ``benchmarks/inference_bench.py``'s docstring; nnunetv2 is no
dependency of this project).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.inference_bench import NAMES, dice, run_worker  # noqa: E402

LIDC_FOLDER = REPO.parent / "shared" / "data" / "real" / "lidc-idri"
DATASET = "Dataset950_LNQChestCT"
CT_SHAPE_ZYX = (140, 512, 512)
CT_SPACING_ZYX_MM = (2.5, 0.7, 0.7)

# Runs inside the nnU-Net environment: nnU-Net's ResEnc-M planner on a fingerprint made of real CT geometry.
PLANNER_SCRIPT = """
import json, os, sys
from pathlib import Path
root, fingerprint = Path(sys.argv[1]), json.loads(sys.argv[2])
raw, pre = root / "raw" / sys.argv[3], root / "pre" / sys.argv[3]
for folder in (raw / "imagesTr", raw / "labelsTr", pre):
    folder.mkdir(parents=True, exist_ok=True)
for index, path in enumerate(fingerprint.pop("files")):  # the planner looks at one image to choose its reader
    (raw / "imagesTr" / f"lnq_{index:03d}_0000.nrrd").symlink_to(path)
    (raw / "labelsTr" / f"lnq_{index:03d}.nrrd").symlink_to(path)
dataset = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "lymph_node": 1}, "numTraining": 120, "file_ending": ".nrrd"}
(raw / "dataset.json").write_text(json.dumps(dataset))
(pre / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
os.environ.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "pre"), nnUNet_results=str(root / "results"))
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import nnUNetPlannerResEncM
from importlib.metadata import version
nnUNetPlannerResEncM(sys.argv[3]).plan_experiment()
print(json.dumps({"plans": str(pre / "nnUNetResEncUNetMPlans.json"), "dataset": str(raw / "dataset.json"),
                  "nnunetv2": version("nnunetv2")}))
"""


def lidc_fingerprint() -> dict:
    """nnU-Net's dataset fingerprint from the LIDC-IDRI scans' headers (spacing and size, z-y-x); node intensities
    as soft tissue (they set the normalization only, not the speed)."""
    import SimpleITK as sitk

    files = sorted(LIDC_FOLDER.glob("*.nrrd"))
    if not files:
        raise SystemExit(f"No LIDC-IDRI CTs in {LIDC_FOLDER}: the ResEnc-M plan is made for their geometry.")
    spacings, shapes = [], []
    for path in files:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        spacings.append(list(reader.GetSpacing())[::-1])
        shapes.append(list(reader.GetSize())[::-1])
    intensities = {"max": 400.0, "mean": 35.0, "median": 36.0, "min": -200.0, "percentile_00_5": -100.0, "percentile_99_5": 200.0}
    return {
        "files": [str(p) for p in files],
        "spacings": spacings,
        "shapes_after_crop": shapes,
        "median_relative_size_after_cropping": 1.0,
        "foreground_intensity_properties_per_channel": {"0": {**intensities, "std": 50.0}},
    }


def plan_resenc_m(nnunet_python: str, work: Path) -> tuple[dict, dict, str]:
    """(plans, dataset.json, nnunetv2 version) from nnU-Net's own ResEnc-M planner."""
    completed = subprocess.run(
        [nnunet_python, "-c", PLANNER_SCRIPT, str(work / "planning"), json.dumps(lidc_fingerprint()), DATASET],
        capture_output=True,
        text=True,
    )
    if completed.returncode != 0:
        raise SystemExit(f"nnU-Net's ResEnc-M planner failed:\n{completed.stderr[-3000:]}")
    paths = json.loads(completed.stdout.strip().splitlines()[-1])
    return json.loads(Path(paths["plans"]).read_text()), json.loads(Path(paths["dataset"]).read_text()), paths["nnunetv2"]


def write_results_folder(plans: dict, dataset: dict, root: Path, seed: int = 0) -> tuple[Path, int]:
    """(folder, parameter count): an nnU-Net v2 results folder for ``plans`` with one fold of random weights of the
    architecture it names."""
    import torch

    from LymphNodeQuantLib.models.networks import build_network

    folder = root / DATASET / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    architecture = plans["configurations"]["3d_fullres"]["architecture"]
    torch.manual_seed(seed)
    network = build_network(
        {
            "name": architecture["network_class_name"],
            "arguments": {**architecture["arch_kwargs"], "input_channels": 1, "num_classes": 2},
        }
    )
    (folder / "plans.json").write_text(json.dumps(plans, indent=2))
    (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    checkpoint = {
        "network_weights": network.state_dict(),
        "init_args": {"plans": plans, "configuration": "3d_fullres", "fold": 0, "dataset_json": dataset},
        "trainer_name": "nnUNetTrainer",
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder, sum(p.numel() for p in network.parameters())


def window_count(shape_zyx, spacing_zyx_mm, target_spacing_zyx_mm, patch_zyx, step: float = 0.5) -> int:
    """Sliding windows over a region resampled to the plan's spacing, placed as nnU-Net places them."""
    count = 1
    for size, spacing, target, patch in zip(shape_zyx, spacing_zyx_mm, target_spacing_zyx_mm, patch_zyx):
        resampled = max(int(round(size * spacing / target)), patch)
        count *= int(np.ceil((resampled - patch) / (patch * step))) + 1
    return count


def summary_rows(runs: dict, masks: dict, reference_key) -> list[dict]:
    from benchmarks.results_md import time_summary

    rows = []
    for (device, variant), results in runs.items():
        if not results:
            continue
        rows.append(
            {
                "device": device,
                "variant": variant,
                "times": time_summary(r["seconds"] for r in results),
                "repeats": len(results),
                "peak": max(r["peak_rss_mib"] for r in results),
                "added": max(r["peak_rss_mib"] - r["baseline_rss_mib"] for r in results),
                "agreement": dice(masks[(device, variant)], masks[reference_key(device, variant)]),
                "foreground_voxels": int(masks[(device, variant)].sum()),
            }
        )
    return rows


def section_markdown(args, context: dict, runs: dict, masks: dict, rounds_done: int, loads: list[float]) -> str:
    from benchmarks.results_md import command_line, format_times, machine_description

    plans, configuration = context["plans"], context["plans"]["configurations"]["3d_fullres"]
    arch = configuration["architecture"]["arch_kwargs"]

    def predictor_of(device, variant):
        return (device, variant.replace("engine-nnunet", "nnunet-predictor"))

    rows = summary_rows(runs, masks, predictor_of)
    medians = {(r["device"], r["variant"]): r["times"]["median"] for r in rows}
    lines = [
        "## nnU-Net v2 ResEnc-M model: this engine vs nnU-Net's predictor (`benchmarks/resenc_bench.py`)",
        "",
        f"Machine: {machine_description(context['git_at_start'])}.  ",
        f"Command: `{command_line()}` (from the repository root). 1-minute load average "
        f"{', '.join(f'{v:.2f}' for v in loads)} at the start of each round (the machine is shared; above ~1 on 2 cores, "
        "other work competed).  ",
        f"Rounds finished: {rounds_done} of {args.repeats}"
        + ("." if rounds_done == args.repeats else " (the run was stopped early; the table holds the finished rounds)."),
        "",
        f"Network: nnU-Net v2 {context['nnunetv2']}'s own `nnUNetPlannerResEncM` plan for chest CTs with the geometry of "
        f"the three LIDC-IDRI scans (`{plans['plans_name']}`, `{configuration['architecture']['network_class_name'].split('.')[-1]}`, "
        f"{arch['n_stages']} stages, features {arch['features_per_stage']}, residual blocks {arch['n_blocks_per_stage']}, "
        f"{context['parameters_millions']:.1f} M parameters; patch {configuration['patch_size']} at "
        f"{[round(s, 3) for s in configuration['spacing']]} mm), one fold (`fold_0`) with random weights (seed 0). "
        f"CT: synthetic chest phantom {' x '.join(map(str, CT_SHAPE_ZYX))} (z, y, x) at "
        f"{' x '.join(map(str, CT_SPACING_ZYX_MM))} mm, seed {args.seed}. Mediastinum box {context['box']} "
        f"({context['box_windows']} windows at step 0.5; the whole CT would be {context['whole_windows']}). "
        f"Threads pinned to {args.threads} in every process. nnU-Net: step 0.5, Gaussian, no mirroring; this engine: its "
        "defaults for nnU-Net folders (the same step, Gaussian weighting and no mirroring) with its anatomy filter off, so "
        "both outputs get the same post-processing (small-component removal only). Time = wall time of the "
        "segmentation call in a fresh process (model loaded, CT read), median (min-max) over the rounds; ratio = "
        "nnU-Net's median over this engine's; agreement = Dice of this engine's node mask with nnU-Net's (random "
        "weights, so it measures the two pipelines, not accuracy).",
        "",
        "| device | method | repeats | time (s): median (min-max) | speed vs nnU-Net (x, medians) | peak RSS (MiB) | added (MiB) | node voxels | agreement with nnU-Net (Dice) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        key = predictor_of(row["device"], row["variant"])
        lines.append(
            f"| {row['device']} | {NAMES.get(row['variant'], row['variant'])} | {row['repeats']} | {format_times(row['times'])} | "
            f"{medians[key] / row['times']['median']:.2f} | {row['peak']:.0f} | {row['added']:.0f} | {row['foreground_voxels']} | "
            f"{row['agreement']:.4f} |"
        )
    lines.append("")
    if not context["gpu"]:
        lines.append("No GPU was available for this run, so there are no GPU rows.")
    return "\n".join(lines)


def prepare(args, work: Path) -> dict:
    """Plan, write the results folder and the CT; what the section needs to describe them."""
    import torch

    from benchmarks.inference_bench import mediastinum_box
    from benchmarks.results_md import git_state
    from LymphNodeQuantLib.io import write_volume
    from LymphNodeQuantLib.models.model_folder import load_model_card, resolve_model
    from LymphNodeQuantLib.synthetic import make_phantom

    git_at_start = git_state()
    plans, dataset, nnunetv2_version = plan_resenc_m(args.nnunet_python, work)
    folder, parameters = write_results_folder(plans, dataset, work / "results")
    phantom = make_phantom(CT_SHAPE_ZYX, CT_SPACING_ZYX_MM, seed=args.seed)
    ct_path = write_volume(work / "ct.nrrd", phantom.ct)
    margin_mm = float(load_model_card(resolve_model("default")).data["input"].get("crop_margin_mm", 20.0))
    box = mediastinum_box(phantom.ct, margin_mm)
    configuration = plans["configurations"]["3d_fullres"]
    box_shape = [b - a for a, b in zip(*box)]

    def windows(shape):
        return window_count(shape, CT_SPACING_ZYX_MM, configuration["spacing"], configuration["patch_size"])

    return {
        "git_at_start": git_at_start,
        "plans": plans,
        "nnunetv2": nnunetv2_version,
        "folder": str(folder),
        "ct_path": ct_path,
        "margin_mm": margin_mm,
        "box": " x ".join(map(str, box_shape)),
        "box_windows": windows(box_shape),
        "whole_windows": windows(CT_SHAPE_ZYX),
        "parameters_millions": parameters / 1e6,
        "gpu": torch.cuda.is_available(),
    }


def main() -> None:
    from benchmarks.results_md import load_average, update_section

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nnunet-python", required=True, help="a Python with nnunetv2 installed")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, default=__import__("os").cpu_count(), help="threads for every method")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-write", action="store_true", help="print the table without updating RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lnq-resenc-") as work_name:
        work = Path(work_name)
        context = prepare(args, work)
        jobs = [("cpu", "nnunet-predictor-crop", args.nnunet_python), ("cpu", "engine-nnunet-crop", sys.executable)]
        if context["gpu"]:
            jobs += [
                (d, v, p)
                for d in ("cuda",)
                for v, p in (("nnunet-predictor", args.nnunet_python), ("engine-nnunet", sys.executable))
            ]
        runs = {(device, variant): [] for device, variant, _ in jobs}
        masks, loads = {}, []
        for repeat in range(args.repeats):
            loads.append(load_average())
            for device, variant, python in jobs:
                out = work / f"{device}-{variant}-{repeat}.npy"
                result = run_worker(
                    variant, Path(context["ct_path"]), context["folder"], out, device, args.threads, context["margin_mm"], python
                )
                runs[(device, variant)].append(result)
                masks.setdefault((device, variant), np.unpackbits(np.load(out)).astype(bool))
                print(f"round {repeat + 1}/{args.repeats} {device} {variant}: {result['seconds']:.1f} s", flush=True)
            markdown = section_markdown(args, context, runs, masks, repeat + 1, loads)
            print(markdown, flush=True)
            if not args.no_write:
                update_section("resenc", markdown)


if __name__ == "__main__":
    main()
