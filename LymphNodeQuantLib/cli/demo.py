"""``lnq demo``: write the demo case, then run the main job on it.

The main job segments ``DIR/demo-ct.nrrd`` with the packaged default model, writes
``DIR/demo.seg.nrrd`` and ``DIR/nodes.csv``, prints the per-node table and scores the result
against the reference ``DIR/demo-seg.nrrd`` (Dice, ASSD, node detection).

The folder's manifest (``lnq-demo.json``) records the case and every file this command wrote;
a rerun reuses the case and replaces only files listed there. A folder (or a file in it) that
this command did not make is never written into.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import OutputExistsError

DEMO_SEED = 2023
DEMO_MANIFEST = "lnq-demo.json"
DEMO_OUTPUTS = {"segmentation": "demo.seg.nrrd", "table": "nodes.csv"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="write the demo CT and segment it with the packaged model (the main job), printing the node table",
        description="Write the demo case: DIR/demo-ct.nrrd, DIR/demo-seg.nrrd (all nodes, label 1) and "
        "DIR/demo-instances.nrrd (one id per node), then segment the CT with the packaged default model: "
        "DIR/demo.seg.nrrd (one segment per node) and DIR/nodes.csv (per-node measurements), and score it "
        "against DIR/demo-seg.nrrd. Rerunning on the same folder reuses the case.",
    )
    parser.add_argument("--out", default="lnq-demo", help="output folder (default: ./lnq-demo)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"phantom seed (default {DEMO_SEED})")
    parser.add_argument("--small", action="store_true", help="a small 48x128x128 case instead of 110x512x512")
    parser.add_argument("--model", default="default", help="model name or folder for the main job (default: the packaged model)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto (default): CUDA when available")
    parser.add_argument("--no-segment", action="store_true", help="only write the demo case, skip the main job")
    parser.set_defaults(func=run)
    return parser


def demo_case_paths(folder: Path) -> dict[str, Path]:
    return {name: folder / f"demo-{name}.nrrd" for name in ("ct", "seg", "instances")}


def _read_manifest(folder: Path) -> dict:
    return json.loads((folder / DEMO_MANIFEST).read_text())


def _write_manifest(folder: Path, manifest: dict) -> None:
    (folder / DEMO_MANIFEST).write_text(json.dumps(manifest, indent=2))


def prepare_demo_folder(folder: Path, seed: int, small: bool) -> dict[str, Path]:
    """Create the demo case in ``folder`` unless an identical one (same manifest) is already there.

    A folder that exists without this command's manifest is never written into.
    """
    from ..synthetic import make_phantom, write_lnq_case

    folder = Path(folder)
    manifest_path = folder / DEMO_MANIFEST
    wanted = {"seed": seed, "small": small}
    paths = demo_case_paths(folder)
    if folder.exists() and any(folder.iterdir()):
        if not manifest_path.exists():
            raise OutputExistsError(
                f"'{folder}' exists and was not made by 'lnq demo'; choose another --out folder (nothing was written)."
            )
        manifest = _read_manifest(folder)
        if manifest.get("case") == wanted and all(p.exists() for p in paths.values()):
            print(f"Reusing the demo case in {folder}/")
            return paths
        # the folder is ours: a different seed/size replaces our own files (case and earlier results)
        for path in list(paths.values()) + [folder / name for name in manifest.get("outputs", [])]:
            path.unlink(missing_ok=True)
    if small:
        phantom = make_phantom((48, 128, 128), (3.0, 2.4, 2.4), seed=seed)
    else:
        phantom = make_phantom((110, 512, 512), (3.0, 0.8, 0.8), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_lnq_case(phantom, folder, "demo", annotation="full")
    _write_manifest(folder, {"case": wanted, "nodes": len(phantom.nodes), "outputs": []})
    print(f"Wrote the demo case to {folder}/: {len(phantom.nodes)} lymph nodes, CT {phantom.ct.geometry.describe()}")
    return paths


def run_main_job(folder: Path, model: str = "default", device: str = "auto") -> dict:
    """Segment the demo CT, write the segmentation and node table, print the table and the scores."""
    from ..evaluate import evaluate_case
    from ..inference import segment_volume
    from ..io import read_volume
    from ..measure import measure_nodes, write_node_table
    from ..output_files import written_together
    from ..segmentation_io import write_segmentation
    from .segment import ProgressPrinter, format_node_table

    folder = Path(folder)
    manifest = _read_manifest(folder)
    ours = set(manifest.get("outputs", []))
    outputs = {key: folder / name for key, name in DEMO_OUTPUTS.items()}
    for path in outputs.values():  # never replace a file this command did not write
        if path.exists() and path.name not in ours:
            raise OutputExistsError(f"'{path}' exists and was not written by 'lnq demo'; move it away (nothing was overwritten).")
    paths = demo_case_paths(folder)
    ct = read_volume(paths["ct"])
    printer = ProgressPrinter("bar")  # a bar on a terminal, a line every few seconds in a log
    try:
        result = segment_volume(ct, model, device, progress=printer)
    finally:
        printer.close()
    manifest["outputs"] = sorted(ours | set(DEMO_OUTPUTS.values()))
    _write_manifest(folder, manifest)  # claim the outputs before writing them
    measurements = measure_nodes(result.labels, ct, nodes_from="labels")
    with written_together():  # the segmentation and its table appear together or not at all
        write_segmentation(outputs["segmentation"], result.labels, result.model_card, overwrite=True)
        write_node_table(outputs["table"], measurements, overwrite=True)
    print(
        f"Segmented with {result.model_card.title} on {result.device} in {result.timings_s['total']:.1f} s: {result.node_count} node(s)"
    )
    for message in result.messages:  # validation note, crop, nodes found and candidates dropped per reason
        print(message)
    scores = evaluate_case(result.labels, read_volume(paths["seg"]), detection_nodes="labels")
    if measurements:
        print(format_node_table(measurements, {n.node_id: n.matched for n in scores.prediction_node_matches}))
    print(
        f"Against the reference demo-seg.nrrd: Dice {scores.dice:.3f}, ASSD {scores.assd_mm:.2f} mm, "
        f"nodes found {scores.true_positives}/{scores.reference_nodes} (false positives {scores.false_positives})"
    )
    print("ASSD: the mean distance between the predicted and the reference node surfaces, both ways (0 mm = identical outlines).")
    return {"result": result, "measurements": measurements, "evaluation": scores, "outputs": outputs}


def run(args: argparse.Namespace) -> int:
    folder = Path(args.out)
    paths = prepare_demo_folder(folder, args.seed, args.small)
    for name, path in paths.items():
        print(f"  {name:10s} {path}")
    if args.no_segment:
        return 0
    job = run_main_job(folder, args.model, args.device)
    for name, path in job["outputs"].items():
        print(f"  {name:12s} {path}")
    return 0
