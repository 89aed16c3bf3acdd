"""A ``.seg.nrrd`` written by the engine (``lnq segment``) opens in Slicer's MRML as the module expects."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from slicer_harness import MODULE_DIR

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

pytestmark = pytest.mark.mrml


def test_engine_seg_nrrd_loads_with_names_terminology_and_label_identity(mrml_scene, tmp_path):
    from LymphNodeQuantMRML import segmentations, terminology
    from LymphNodeQuantMRML.volumes import add_volume_node

    from LymphNodeQuantLib.segmentation_io import write_segmentation
    from LymphNodeQuantLib.synthetic import make_phantom

    phantom = make_phantom((30, 64, 64), (3.0, 5.0, 5.0), seed=8)
    path = write_segmentation(tmp_path / "nodes.seg.nrrd", phantom.node_labels)
    node = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "from engine")
    storage = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)

    values = [int(v) for v in np.unique(phantom.node_labels.array) if v]
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(values)
    for value in values:
        segment_id = segmentations.segment_id_for_label(node, value)
        assert segment_id, f"no segment named 'Lymph node {value}'"
        codes = terminology.parse_terminology_entry(terminology.segment_terminology(segmentation.GetSegment(segment_id)))
        assert codes["type"].value == "59441001" and codes["region"].value == "72410000"
    ct_node = add_volume_node(mrml_scene, phantom.ct, "ct")
    export = segmentations.labels_from_segmentation_node(node, ct_node)
    assert np.array_equal(export.labels.array, phantom.node_labels.array)
