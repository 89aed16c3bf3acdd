"""``lnq measure``: per-node table (RECIST axes, volume, centroid, HU) of a lymph-node label map."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "measure",
        help="measure every node of a label map: RECIST short/long axis, volume, centroid, HU",
        description="Split a label map into nodes (3-D connected components of the non-zero voxels, 26-connectivity "
        "by default) and write one row per node: centroid (RAS and LPS mm), volume (mm3, mL), RECIST short and long "
        "axis (mm) and the slice they were measured in, the largest 3-D diameter, mean/std HU with --ct, and "
        "'enlarged' (short axis >= 10 mm). The file type follows --out: .csv or .json.",
    )
    parser.add_argument("--seg", required=True, help="label map (.nrrd, .nii.gz, ...): non-zero voxels are node voxels")
    parser.add_argument("--ct", help="CT on the same grid, for mean/std HU per node")
    parser.add_argument("--out", required=True, help="output table: nodes.csv or nodes.json")
    parser.add_argument("--min-volume-mm3", type=float, default=0.0, help="drop nodes smaller than this (default 0)")
    parser.add_argument("--connectivity", type=int, choices=(6, 18, 26), default=26, help="3-D connectivity (default 26)")
    parser.add_argument(
        "--nodes-from",
        choices=("components", "labels"),
        default="components",
        help="'components' (default): connected components; 'labels': each label value of an instance map is one node "
        "(node_id = label value), e.g. for 'lnq segment' output, where touching nodes keep their own ids",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..io import check_output_path, read_label_map, read_volume
    from ..measure import measure_nodes, write_node_table

    out = Path(args.out)
    if out.suffix.lower() not in (".csv", ".json"):
        from ..errors import InputError

        raise InputError(f"--out '{out}' must end in .csv or .json.")
    check_output_path(out, args.overwrite)  # fail before the work, not after
    labels = read_label_map(args.seg)
    ct = read_volume(args.ct) if args.ct else None
    measurements = measure_nodes(
        labels, ct, min_volume_mm3=args.min_volume_mm3, connectivity=args.connectivity, nodes_from=args.nodes_from
    )
    metadata = {"segmentation": str(args.seg), "ct": str(args.ct) if args.ct else None, "geometry": labels.geometry.describe()}
    write_node_table(out, measurements, overwrite=args.overwrite, metadata=metadata)
    enlarged = sum(m.enlarged for m in measurements)
    print(f"{len(measurements)} nodes ({enlarged} enlarged, short axis >= 10 mm) -> {out}")
    for m in measurements:
        print(
            f"  node {m.node_id:3d}: short {m.short_axis_mm:6.1f} mm, long {m.long_axis_mm:6.1f} mm, "
            f"volume {m.volume_ml:8.3f} mL, slice {m.measurement_slice_index}"
        )
    if measurements and measurements[0].measurement_plane != "axial":
        print(f"note: measured in the {measurements[0].measurement_plane}")
    return 0
