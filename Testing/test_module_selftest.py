"""The module's own ScriptedLoadableModuleTest, run through the harness on slicer-core's MRML.

This is the test Slicer's CI runs (``slicer_add_python_unittest``); here ``runTest`` executes the
same end-to-end flow with the packaged model on a small phantom.
"""

from __future__ import annotations

import pytest

import slicer_harness
from slicer_harness import packaged_model  # noqa: F401  (fixture)

pytestmark = pytest.mark.mrml


def test_module_self_test_runs_end_to_end(mrml_scene, packaged_model):
    module = slicer_harness.load_module()
    test = module.LymphNodeQuantTest()  # methodName "runTest", as Slicer's test runner does
    assert test.model == "default"
    test.runTest()
    # runTest really worked on the scene: the last sub-test left the phantom, its reference and
    # the module's parameter node behind.
    assert mrml_scene.GetFirstNodeByName("PhantomCT") is not None
    assert mrml_scene.GetFirstNodeByName("PhantomReference") is not None
