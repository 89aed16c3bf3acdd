"""The module's own ScriptedLoadableModuleTest, run through the harness on slicer-core's MRML.

* ``runTest`` (Slicer's "Reload and Test") with every package present: the full segment /
  measure / compare cycle with the packaged model, nothing skipped.
* As CTest runs it (``slicer_add_python_unittest`` -> ``slicer.testing.runUnitTest``: unittest's
  loader and text runner) on a Slicer like the extensions build machines, where PyTorch and the
  engine's pip packages are absent: it passes, runs what needs no PyTorch and reports the rest as
  skipped with the missing package named. Simulated in a fresh process where importing those
  packages fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import slicer_harness
from slicer_harness import packaged_model as _packaged_model_fixture  # noqa: F401  (registers the "packaged_model" fixture)
from slicer_harness import slicer_scene as _slicer_scene_fixture  # noqa: F401  (registers the "slicer_scene" fixture)

pytestmark = pytest.mark.mrml

ENGINE_PACKAGES = (
    "torch",
    "torchvision",
    "monai",
    "safetensors",
    "dynamic_network_architectures",
    "timm",
    "einops",
    "tqdm",
    "cc3d",
)
NEEDS_NO_TORCH = {"test_BadInput", "test_SegmentationRoundTrip"}
NEEDS_CC3D = {"test_MeasureAndCompareReference", "test_FollowupKnownPair"}
NEEDS_TORCH = {"test_SegmentMeasureCompare", "test_CancelLeavesSceneUnchanged"}


def test_module_self_test_runs_end_to_end(slicer_scene, packaged_model):
    module = slicer_harness.load_module()
    test = module.LymphNodeQuantTest()  # methodName "runTest", as Slicer's test runner does
    assert test.model == "default"
    assert set(test.testNames) == NEEDS_NO_TORCH | NEEDS_CC3D | NEEDS_TORCH
    assert set(test.testNames) == {name for name in test.moduleTestNames if name.startswith("test_")}
    test.runTest()
    assert test.skipped == [], test.skipped  # every package is installed here: nothing may be skipped
    assert test.displayedMessages[-1] == "Test passed"
    # runTest really worked on the scene: the last sub-test left the phantom, its reference and
    # the module's parameter node behind.
    assert slicer_scene.GetFirstNodeByName("PhantomCT") is not None
    assert slicer_scene.GetFirstNodeByName("PhantomReference") is not None


_CTEST_LIKE_RUN = textwrap.dedent(
    """
    import json, sys, unittest
    blocked = set(sys.argv[2].split(",")) if sys.argv[2] else set()

    class SlicerWithout:
        '''Importing a blocked package fails, as on a Slicer where it is not installed.'''
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, SlicerWithout())
    sys.path.insert(0, sys.argv[1])
    import slicer_harness
    slicer_harness.make_scene()
    module = slicer_harness.load_module()
    result = slicer_harness.run_like_ctest(module)
    print(json.dumps({
        "successful": result.wasSuccessful(),
        "run": result.testsRun,
        "skipped": {test.id().rsplit(".", 1)[-1]: reason for test, reason in result.skipped},
        "problems": [text for _, text in result.failures + result.errors],
        "imported": sorted(name for name in sys.modules if name.split(".")[0] in blocked),
    }))
    """
)


def _run_like_ctest(blocked):
    result = subprocess.run(
        [sys.executable, "-c", _CTEST_LIKE_RUN, str(slicer_harness.REPO_ROOT / "Testing"), ",".join(blocked)],
        capture_output=True, text=True, timeout=600, cwd=str(slicer_harness.REPO_ROOT),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_ctest_run_passes_on_a_slicer_without_torch_or_engine_packages():
    report, log = _run_like_ctest(ENGINE_PACKAGES)
    assert report["successful"], "\n".join(report["problems"]) + log[-3000:]
    assert report["problems"] == []
    assert set(report["skipped"]) == NEEDS_CC3D | NEEDS_TORCH
    for name in NEEDS_TORCH:
        assert "torch" in report["skipped"][name] and "not installed" in report["skipped"][name]
    assert all("cc3d" in report["skipped"][name] for name in NEEDS_CC3D)
    # the tests that need no PyTorch ran (and passed): every LymphNodeQuantTest test (skipped or not) + Slicer's base class
    assert report["run"] == len(NEEDS_NO_TORCH | NEEDS_CC3D | NEEDS_TORCH) + 1
    assert "test_BadInput" in log and "test_SegmentationRoundTrip" in log
    assert report["imported"] == []


def test_ctest_run_without_torch_still_measures_and_compares():
    without_torch = [name for name in ENGINE_PACKAGES if name != "cc3d"]
    report, log = _run_like_ctest(without_torch)
    assert report["successful"], "\n".join(report["problems"]) + log[-3000:]
    assert set(report["skipped"]) == NEEDS_TORCH
    assert all("torch" in reason for reason in report["skipped"].values())
