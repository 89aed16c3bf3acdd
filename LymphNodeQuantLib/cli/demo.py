"""``lnq demo``: write the demo case (a synthetic chest CT with its full reference label)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import OutputExistsError

DEMO_SEED = 2023
DEMO_MANIFEST = "lnq-demo.json"


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="write the demo CT (synthetic chest CT with lymph nodes) and its reference segmentation",
        description="Write the demo case: DIR/demo-ct.nrrd, DIR/demo-seg.nrrd (all nodes, label 1) and "
        "DIR/demo-instances.nrrd (one id per node). Rerunning on the same folder reuses it.",
    )
    parser.add_argument("--out", default="lnq-demo", help="output folder (default: ./lnq-demo)")
    parser.add_argument("--seed", type=int, default=DEMO_SEED, help=f"phantom seed (default {DEMO_SEED})")
    parser.add_argument("--small", action="store_true", help="a small 48x128x128 case instead of 110x512x512")
    parser.set_defaults(func=run)
    return parser


def demo_case_paths(folder: Path) -> dict[str, Path]:
    return {name: folder / f"demo-{name}.nrrd" for name in ("ct", "seg", "instances")}


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
        if json.loads(manifest_path.read_text()).get("case") == wanted and all(p.exists() for p in paths.values()):
            print(f"Reusing the demo case in {folder}/")
            return paths
        for path in paths.values():  # the folder is ours: a different seed/size replaces our own files
            path.unlink(missing_ok=True)
    if small:
        phantom = make_phantom((48, 128, 128), (3.0, 2.4, 2.4), seed=seed)
    else:
        phantom = make_phantom((110, 512, 512), (3.0, 0.8, 0.8), seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    write_lnq_case(phantom, folder, "demo", annotation="full")
    manifest_path.write_text(json.dumps({"case": wanted, "nodes": len(phantom.nodes)}, indent=2))
    print(f"Wrote the demo case to {folder}/: {len(phantom.nodes)} lymph nodes, CT {phantom.ct.geometry.describe()}")
    return paths


def run(args: argparse.Namespace) -> int:
    paths = prepare_demo_folder(Path(args.out), args.seed, args.small)
    for name, path in paths.items():
        print(f"  {name:10s} {path}")
    return 0
