"""Tests of the test harness (not of the module): its stand-ins for Slicer's Qt-bound parts behave
like Slicer's (Base/Python/slicer/ScriptedLoadableModule.py, qMRMLTableModel, PyTorchUtils) and
fail where Slicer fails."""

from __future__ import annotations

import sys
import types

import pytest
import slicer_harness

pytestmark = pytest.mark.mrml


@pytest.fixture
def base_classes(mrml_scene):
    slicer_harness.install()
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )

    return ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest


def test_module_resources_follow_the_module_path(base_classes, tmp_path):
    ScriptedLoadableModule, ScriptedLoadableModuleWidget, *_ = base_classes

    class Elsewhere(ScriptedLoadableModule):
        pass

    class ElsewhereWidget(ScriptedLoadableModuleWidget):
        pass

    (tmp_path / "Resources" / "Icons").mkdir(parents=True)
    (tmp_path / "Resources" / "Icons" / "Elsewhere.png").write_bytes(b"")
    parent = slicer_harness.ModuleParent(tmp_path / "Elsewhere.py")
    module = Elsewhere(parent)
    assert module.resourcePath("UI/Elsewhere.ui") == str(tmp_path / "Resources" / "UI" / "Elsewhere.ui")
    assert parent.icon == str(tmp_path / "Resources" / "Icons" / "Elsewhere.png") and parent.title == ""
    with pytest.raises(AttributeError):
        Elsewhere(types.SimpleNamespace())  # Slicer's parent always has a path; without one this fails as in Slicer
    slicer_harness.register_module("Elsewhere", str(tmp_path / "Elsewhere.py"))
    widget = ElsewhereWidget(parent=object())
    assert widget.resourcePath("UI/Elsewhere.ui") == str(tmp_path / "Resources" / "UI" / "Elsewhere.ui")
    with pytest.raises(RuntimeError, match="Qt"):
        ElsewhereWidget(None)
    import slicer

    assert slicer.selfTests["Elsewhere"] == module.runTest


def test_logic_parameter_node_is_a_singleton_and_test_names_follow_slicer(base_classes, mrml_scene):
    _, _, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest = base_classes

    class ThingLogic(ScriptedLoadableModuleLogic):
        pass

    node = ThingLogic().getParameterNode()
    node.SetAttribute("ModuleName", "")
    assert ThingLogic().getParameterNode() is node and node.GetAttribute("ModuleName") == "Thing"
    assert node.GetSingletonTag() == "Thing"

    ran = []

    class ThingTest(ScriptedLoadableModuleTest):
        def test_a(self):
            ran.append("a")

        def helper_test_b(self):  # Slicer runs every callable with "test" in its name
            ran.append("b")

    ThingTest().runTest()
    assert sorted(ran) == ["a", "b"]


def test_scene_has_the_module_logics_of_a_slicer_scene(mrml_scene, tmp_path):
    import slicer

    scene = slicer_harness.make_scene()
    try:
        assert slicer.mrmlScene is scene
        for name, cls in (("plots", "vtkSlicerPlotsLogic"), ("tables", "vtkSlicerTablesLogic"),
                          ("terminologies", "vtkSlicerTerminologiesModuleLogic"), ("segmentations", "vtkSlicerSegmentationsModuleLogic")):  # fmt: skip
            logic = getattr(slicer.modules, name).logic()
            assert logic.IsA(cls) and logic.GetMRMLScene() is scene, name
    finally:
        slicer.mrmlScene = mrml_scene


def test_slicer_application_sets_a_version_and_restores(mrml_scene):
    import slicer

    assert not hasattr(slicer, "app")
    with slicer_harness.slicer_application(5, 8) as app:
        assert (slicer.app.majorVersion, slicer.app.minorVersion) == (5, 8) and app.testingEnabled()
    assert not hasattr(slicer, "app")


def test_widget_code_without_qt_fails_loudly():
    slicer_harness.install()
    qt = sys.modules["qt"]
    if isinstance(qt, slicer_harness._NoQtModule):
        with pytest.raises(AttributeError, match="without Qt"):
            qt.QTimer()


def test_table_view_models_have_slicers_layout(mrml_scene):
    import vtk

    table = mrml_scene.AddNewNodeByClass("vtkMRMLTableNode")
    for name, values in (("name", ["a", "b", "c"]), ("value", [3.0, 1.0, 2.0])):
        column = vtk.vtkStringArray() if name == "name" else vtk.vtkDoubleArray()
        column.SetName(name)
        for value in values:
            column.InsertNextValue(value)
        table.GetTable().AddColumn(column)
    view = slicer_harness.FakeTableView(table)
    model, proxy = view.tableModel(), view.sortFilterProxyModel()
    assert not table.GetUseColumnTitleAsColumnHeader()  # Slicer's default: column names in row 0
    assert model.rowCount() == 4 and model.data(model.index(0, 1)) == "value" and model.data(model.index(1, 0)) == "a"
    assert model.mrmlTableRowIndex(model.index(0, 0)) == -1 and model.mrmlTableRowIndex(model.index(3, 0)) == 2
    table.SetUseColumnTitleAsColumnHeader(True)
    assert model.rowCount() == 3 and model.data(model.index(0, 0)) == "a" and model.mrmlTableRowIndex(model.index(0, 0)) == 0
    proxy.sort(1, descending=True)
    assert [proxy.data(proxy.index(row, 0)) for row in range(3)] == ["a", "c", "b"]
    assert [proxy.mapToSource(proxy.index(row, 0)).row() for row in range(3)] == [0, 2, 1]
    assert not proxy.mapToSource(proxy.index(5, 0)).isValid()
    table.SetUseFirstColumnAsRowHeader(True)
    assert (
        model.columnCount() == 1 and model.data(model.index(0, 0)) == "3" and model.mrmlTableColumnIndex(model.index(0, 0)) == 1
    )
    transposed = slicer_harness.FakeTableView(table, transposed=True).tableModel()
    assert (transposed.rowCount(), transposed.columnCount()) == (1, 3) and transposed.mrmlTableRowIndex(
        transposed.index(0, 2)
    ) == 2


def test_pytorch_extension_stand_in_has_the_extensions_signature():
    from packaging.specifiers import InvalidSpecifier

    extension = slicer_harness.FakePyTorchUtils()
    logic = extension.PyTorchUtilsLogic()
    with pytest.raises(TypeError):
        logic.installTorch(confirm=False)  # not a parameter of PyTorchUtilsLogic.installTorch
    with pytest.raises(InvalidSpecifier):
        logic.installTorch(torchVersionRequirement="2.8")  # light-the-torch needs a specifier, not a version
    assert logic.installTorch(False, None, ">=2.8").__version__ == "2.8.0"
    assert extension.calls[-1]["torchVersionRequirement"] == ">=2.8"


def test_vtk_call_recording_sees_only_calls_from_the_given_folder(mrml_scene, tmp_path):
    script = tmp_path / "caller.py"
    script.write_text("def touch(scene):\n    return scene.GetNumberOfNodes()\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import caller

        with slicer_harness.record_vtk_calls(tmp_path) as calls:
            caller.touch(mrml_scene)
            mrml_scene.GetNodeByID("nothing")  # from this file: not recorded
        assert calls == {("vtkMRMLScene", "GetNumberOfNodes")}
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("caller", None)


def test_ctest_like_run_loads_every_test_case_of_the_module():
    import unittest

    module = types.ModuleType("fake_module")

    class SomeTest(unittest.TestCase):
        def test_one(self):
            pass

        def test_two(self):
            self.skipTest("needs something")

    module.SomeTest = SomeTest
    result = slicer_harness.run_like_ctest(module)
    assert result.wasSuccessful() and result.testsRun == 2 and len(result.skipped) == 1
