"""Shared fixtures.

* ``shared_data``: ``../shared/data/real`` beside the repo (real CT fixtures); tests skip with a
  reason when it is absent.
* ``mrml_scene``: a real ``vtkMRMLScene`` from the slicer-core wheel, set as ``slicer.mrmlScene``,
  with ``vtkSlicerSegmentationsModuleLogic`` attached so segmentation conversion rules register.
  In CI (``CI`` set) a missing slicer-core is an error, not a skip.
* ``tiny_model`` / ``ct_file``: a tiny random model folder and a small phantom CT file for CLI runs.
* ``LNQ_FULL_SIZE=1`` runs ``slow`` tests at full size; by default they run reduced.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "real"
FULL_SIZE = os.environ.get("LNQ_FULL_SIZE", "") == "1"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def full_size() -> bool:
    """True when slow tests should run at full size (``LNQ_FULL_SIZE=1``)."""
    return FULL_SIZE


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real CT fixtures not found at {SHARED_DATA} (the project's shared/ folder)")
    return SHARED_DATA


def _import_slicer():
    try:
        import slicer  # noqa: F401
        from slicer import vtkMRMLScene  # noqa: F401
    except ImportError as error:
        if os.environ.get("CI"):
            raise RuntimeError("slicer-core must be installed in CI: pip install -e '.[test]'") from error
        pytest.skip(f"slicer-core not installed ({error}); pip install -e '.[test]'")
    import slicer

    return slicer


@pytest.fixture
def mrml_scene():
    """A fresh ``vtkMRMLScene`` registered as ``slicer.mrmlScene`` with the Segmentations logic."""
    slicer = _import_slicer()
    from slicer import vtkMRMLScene, vtkSlicerSegmentationsModuleLogic

    scene = vtkMRMLScene()
    previous = getattr(slicer, "mrmlScene", None)
    slicer.mrmlScene = scene
    segmentations_logic = vtkSlicerSegmentationsModuleLogic()
    segmentations_logic.SetMRMLScene(scene)
    scene.segmentations_logic = segmentations_logic  # keep it alive as long as the scene
    try:
        yield scene
    finally:
        scene.Clear(1)
        slicer.mrmlScene = previous


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A tiny randomly initialised model folder (4 mm grid), for end-to-end CLI runs."""
    import torch

    from LymphNodeQuantLib.models.model_folder import save_model_folder
    from LymphNodeQuantLib.models.networks import build_network, plain_unet_architecture

    torch.manual_seed(1)
    architecture = plain_unet_architecture(
        features_per_stage=(4, 8), strides=((1, 1, 1), (2, 2, 2)), kernel_sizes=((3, 3, 3),) * 2
    )
    card = {
        "name": "tiny-cli",
        "version": "0.1",
        "architecture": architecture,
        "input": {
            "spacing_zyx_mm": [4.0, 4.0, 4.0],
            "normalization": {"clip_hu": [-150, 350], "mean": 40.0, "std": 80.0},
            "patch_size_zyx": [16, 32, 32],
            "crop": "mediastinum",
        },
        "postprocessing": {"threshold": 0.5, "min_node_volume_mm3": 0.0},
    }
    return save_model_folder(tmp_path_factory.mktemp("models") / "tiny-cli", build_network(architecture), card)


@pytest.fixture(scope="session")
def ct_file(tmp_path_factory):
    """A small phantom chest CT written as .nii.gz."""
    from LymphNodeQuantLib.io import write_volume
    from LymphNodeQuantLib.synthetic import make_phantom

    phantom = make_phantom((32, 80, 80), (3.0, 4.0, 4.0), seed=5)
    return write_volume(tmp_path_factory.mktemp("ct") / "case-ct.nii.gz", phantom.ct)
