"""Every Slicer class method the module uses exists in the oldest supported Slicer we can test.

The module (``LymphNodeQuant.py``) and ``LymphNodeQuantMRML`` call methods of ``vtkMRML*``,
``vtkSegment*``, ``vtkSlicer*`` and ``vtkOrientedImageData`` objects. Which class each call goes
to is recorded while the module's code runs on a real scene (self-test parts that need no
PyTorch, and the Logic's other paths); calls written with their class (``slicer.vtkX.Method``,
``slicer.mrmlScene.Method``) are read from the source, and the few calls the recording cannot
place (widget-only calls, some overloaded VTK methods) are listed with their class.
Every upper-case (VTK-style) attribute in the source must be accounted for, so a new call cannot
slip past. Each (class, method) must exist

* in the installed slicer-core (the MRML library of the test environment), and
* in the oldest slicer-core wheel at or after the oldest supported Slicer (5.10): PyPI has no
  5.10 wheel, the oldest is 5.11.0.2 (built between 5.10 and 5.12; it needs vtk 9.6.0). It is
  installed once into a cache folder (``~/.cache/LymphNodeQuant-tests``, or
  ``LNQ_OLD_SLICER_CORE_DIR``); where pip cannot fetch it the test says so (a skip locally, a
  failure in CI).

Plain VTK classes (``vtkMatrix4x4``, ``vtkStringArray``...) come with Slicer's own VTK and are not
checked against slicer-core's.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import slicer_harness
from slicer_harness import MODULE_DIR

pytestmark = pytest.mark.mrml

OLDEST_SLICER_CORE = "5.11.0.2"
OLDEST_SLICER_CORE_VTK = "9.6.0"  # slicer-core 5.11.0.2 requires vtk==9.6.0
SLICER_CLASS = re.compile(r"^vtk(MRML|Segment|Slicer|OrientedImageData)")
SOURCE_FILES = [MODULE_DIR / "LymphNodeQuant.py", *sorted((MODULE_DIR / "LymphNodeQuantMRML").glob("*.py"))]
#: roots of attribute chains that are not VTK objects (Python modules, the module's own packages)
PYTHON_ROOTS = {
    "argparse", "subprocess", "queue", "json", "signal", "psutil", "importlib", "qt", "ctk", "PyTorchUtils", "unittest",
    "tempfile", "threading", "collections", "os", "sys", "re", "np", "logging", "runner", "segmentations", "tables",
    "dependencies", "compatibility", "terminology", "plots", "volumes", "transaction", "typing", "dataclasses", "model_installs",
}  # fmt: skip
#: calls whose receiver class the recording cannot give, method -> class: only the Qt widget makes
#: them, the exercised paths do not reach them, or the profiler does not report them (some
#: overloaded VTK methods are called without a profiler event)
UNRECORDED_CALLS = {
    "ShowChartInLayout": "vtkSlicerPlotsLogic",  # widget: slicer.modules.plots.logic().ShowChartInLayout(chart)
    "PropagatePlotChartSelection": "vtkMRMLApplicationLogic",  # widget: slicer.app.applicationLogic() (vtkSlicerApplicationLogic)
    "SetXColumnName": "vtkMRMLPlotSeriesNode",  # plots.add_bar_chart(x_column=...), unused by the module
    "GetDimensions": "vtkImageData",  # volume_node.GetImageData().GetDimensions()
    "GetNumberOfScalarComponents": "vtkImageData",
    "GetNumberOfTuples": "vtkAbstractArray",  # table.GetColumnByName(...).GetNumberOfTuples()
    "GetScalars": "vtkPointData",  # image.GetPointData().GetScalars()
}


def _chain(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return list(reversed(parts)), True
    return list(reversed(parts)), False


def source_vtk_names():
    """(explicit class or None, name, where) for every VTK-style attribute used in the module's source."""
    found = set()
    for path in SOURCE_FILES:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute) or not node.attr[:1].isupper():
                continue
            parts, rooted = _chain(node)
            root = parts[0] if rooted else None
            if root in PYTHON_ROOTS or (root == "self" and node.attr.isupper()):
                continue
            explicit = None
            if rooted and len(parts) >= 3 and parts[0] in ("slicer", "vtk") and parts[1].startswith("vtk"):
                explicit = parts[1]
            elif rooted and parts[:2] == ["slicer", "mrmlScene"] and len(parts) == 3:
                explicit = "vtkMRMLScene"
            elif rooted and len(parts) == 2 and parts[0].startswith("vtk"):
                explicit = parts[0]  # an imported class: vtkSlicerTerminologiesModuleLogic.SerializeTerminologyEntry
            elif rooted and len(parts) == 2 and parts[0] in ("vtk", "slicer"):
                explicit = parts[0]  # a module-level constant or class: vtk.VTK_INT, slicer.vtkOrientedImageData
            elif node.attr.isupper():
                continue  # a Python constant (ATTRIBUTE_..., POLL_INTERVAL_MS)
            found.add((explicit, node.attr, path.name))
    return found


def _exercise_module(module):
    """Run the module's code on a real scene without PyTorch: the self-test's no-torch tests and the
    Logic's other paths (existing output node, transformed CT, refilled tables, reference without
    geometry, failed transaction)."""
    import slicer
    from LymphNodeQuantMRML.core import SegmentationOutcome
    from LymphNodeQuantMRML.segmentations import add_segmentation_node, segment_id_for_label
    from LymphNodeQuantMRML.transaction import SceneTransaction
    from LymphNodeQuantMRML.volumes import add_volume_node

    from LymphNodeQuantLib.synthetic import make_phantom

    test = module.LymphNodeQuantTest()
    for name in ("test_BadInput", "test_SegmentationRoundTrip", "test_MeasureAndCompareReference", "test_FollowupKnownPair"):
        test.setUp()
        getattr(test, name)()
    _exercise_followup_views(module)
    test.setUp()
    scene = slicer.mrmlScene
    phantom = make_phantom((24, 56, 56), (3.0, 5.0, 5.0), seed=4)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    ct = add_volume_node(scene, phantom.ct, "ct", parent_transform_id=transform.GetID())
    logic = module.LymphNodeQuantLogic()
    parameters = logic.getParameterNode()
    parameters.inputVolume = ct
    outcome = SegmentationOutcome(phantom.node_labels, {"name": "api-check", "version": "1"}, "cpu")
    new = logic.core.add_segmentation(ct, outcome)
    existing = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "existing")
    logic.core.add_segmentation(ct, outcome, existing)
    table = logic.measure(new, ct)
    logic.measure(new, ct, tableNode=table)
    logic.nodeCenterRAS(table, 0)
    reference = add_segmentation_node(scene, phantom.partial_labels, "reference without geometry")
    scores = logic.compare(new, reference)
    logic.compare(new, reference, tableNode=scores)
    segment_id_for_label(new, 1)
    try:
        with SceneTransaction(scene):
            scene.AddNewNodeByClass("vtkMRMLTableNode")
            raise RuntimeError("rolled back")
    except RuntimeError:
        pass


def _exercise_followup_views(module):
    """On the scene the follow-up self-test left: the side-by-side layout, and row clicks with the follow-up CT
    under a transform, with the application, layout and slice logics Slicer's application adds."""
    import slicer

    scene = slicer.mrmlScene
    table = scene.GetFirstNodeByName("Follow-up Baseline CT to Follow-up CT")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    scene.GetFirstNodeByName("Follow-up CT").SetAndObserveTransformNodeID(transform.GetID())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    logics = [
        slicer.vtkMRMLApplicationLogic(),
        slicer.vtkMRMLLayoutLogic(),
        slicer.vtkMRMLSliceLogic(),
        slicer.vtkMRMLSliceLogic(),
    ]
    for logic in logics:
        logic.SetMRMLScene(scene)
    for logic, name in zip(logics[2:], ("Red", "Yellow")):
        logic.AddSliceNode(name)
    try:
        logic = module.LymphNodeQuantLogic()
        logic.showFollowup(table, hiddenSegmentationNode=scene.GetFirstNodeByName("follow-up nodes"))
        logic.showFollowup(table)  # the layout is registered already
        for row in range(table.GetNumberOfRows()):
            logic.centerFollowupViews(table, row)
        assert logic.followupResponseText(table)
    finally:
        for logic in reversed(logics):
            logic.SetMRMLScene(None)


@pytest.fixture(scope="module")
def used_api():
    """{(class, method)} the module calls, recorded on a real scene plus read from the source."""
    import slicer

    previous = getattr(slicer, "mrmlScene", None)
    slicer_harness.make_scene()
    try:
        module = slicer_harness.load_module()
        with slicer_harness.record_vtk_calls() as recorded:
            _exercise_module(module)
    finally:
        slicer.mrmlScene = previous
    explicit = {(cls, name) for cls, name, _ in source_vtk_names() if cls is not None}
    widget = {(cls, name) for name, cls in UNRECORDED_CALLS.items()}
    return set(recorded), explicit | widget


def test_every_vtk_style_name_in_the_source_is_accounted_for(used_api):
    recorded, known = used_api
    recorded_names = {name for _, name in recorded}
    unaccounted = sorted(
        (name, where)
        for cls, name, where in source_vtk_names()
        if cls is None and name not in recorded_names and name not in UNRECORDED_CALLS
    )
    assert unaccounted == [], (
        "calls the test does not know the class of: exercise them in _exercise_module, or add them to UNRECORDED_CALLS: "
        f"{unaccounted}"
    )
    assert ("vtkMRMLScene", "AddNewNodeByClass") in recorded and ("vtkSegment", "SetTag") in recorded


def _slicer_pairs(used_api):
    recorded, known = used_api
    return sorted(pair for pair in recorded | known if SLICER_CLASS.match(pair[0]) or pair[0] in ("slicer", "vtk"))


_CHECK = """
import json, sys
import slicer, vtk
missing = []
for cls, name in json.load(sys.stdin):
    owner = {"slicer": slicer, "vtk": vtk}.get(cls) or getattr(slicer, cls, None) or getattr(vtk, cls, None)
    if owner is None or not hasattr(owner, name):
        missing.append(f"{cls}.{name}")
print(json.dumps({"version": getattr(slicer, "__version__", ""), "missing": missing}))
"""


def _missing_in(pairs, env=None):
    result = subprocess.run(
        [sys.executable, "-c", _CHECK], input=json.dumps(pairs), capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])["missing"]


def test_every_slicer_method_exists_in_the_installed_slicer_core(used_api):
    pairs = _slicer_pairs(used_api)
    assert len(pairs) > 60
    assert _missing_in(pairs) == []


def _oldest_slicer_core() -> Path:
    configured = os.environ.get("LNQ_OLD_SLICER_CORE_DIR")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    folder = (
        Path(configured)
        if configured
        else cache / "LymphNodeQuant-tests" / f"slicer-core-{OLDEST_SLICER_CORE}-py{sys.version_info[0]}{sys.version_info[1]}"
    )
    if (folder / ".complete").is_file():
        return folder
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:", "--upgrade",
               "--target", str(folder), f"slicer-core=={OLDEST_SLICER_CORE}", f"vtk=={OLDEST_SLICER_CORE_VTK}"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        message = (f"could not install slicer-core {OLDEST_SLICER_CORE} with vtk {OLDEST_SLICER_CORE_VTK} for Python "
                   f"{sys.version_info[0]}.{sys.version_info[1]} into {folder}: " + " | ".join(result.stderr.strip().splitlines()[-3:]))  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    (folder / ".complete").write_text(f"slicer-core=={OLDEST_SLICER_CORE} vtk=={OLDEST_SLICER_CORE_VTK}\n")
    return folder


def test_every_slicer_method_exists_in_the_oldest_testable_slicer_core(used_api):
    folder = _oldest_slicer_core()
    env = dict(os.environ, PYTHONPATH=str(folder))
    probe = subprocess.run([sys.executable, "-c", "import slicer, vtk; print(slicer.__file__, vtk.vtkVersion.GetVTKVersion())"],
                           capture_output=True, text=True, env=env, timeout=300)  # fmt: skip
    assert probe.returncode == 0 and probe.stdout.startswith(str(folder)), probe.stdout + probe.stderr[-2000:]
    assert OLDEST_SLICER_CORE_VTK in probe.stdout
    assert _missing_in(_slicer_pairs(used_api), env) == []
