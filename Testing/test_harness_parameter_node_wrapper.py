"""Tests of the test harness (not of the module): the stand-in ``parameterNodeWrapper`` rejects what
Slicer's rejects (Base/Python/slicer/parameterNodeWrapper, v5.10 - main) and behaves like it on a
real ``vtkMRMLScriptedModuleNode``. (No ``from __future__ import annotations``: the wrapped
classes below are defined inside functions, whose names string annotations could not see.)"""

import enum
import pathlib
from typing import Annotated, Optional, Union

import pytest
import slicer_harness
from slicer_harness import Choice, Default, WithinRange, parameterNodeWrapper

pytestmark = pytest.mark.mrml


@pytest.fixture
def parameter_node(mrml_scene):
    slicer_harness.install()
    return mrml_scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", "parameters")


class Colour(enum.Enum):
    RED = 1
    BLUE = 2


def _wrapper():
    from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

    @parameterNodeWrapper
    class Parameters:
        name: str = "default"
        count: int
        ratio: float = 0.5
        enabled: bool
        folder: pathlib.Path
        colour: Colour
        volume: vtkMRMLScalarVolumeNode
        optionalName: Optional[str]
        either: Union[int, str] = 3
        mode: Annotated[str, Choice(["a", "b"])] = "a"
        level: Annotated[float, WithinRange(0, 10)] = 1.0
        segmentation: Annotated[vtkMRMLSegmentationNode, Default(None)]

        def describe(self) -> str:
            return f"{self.name}:{self.count}"

    return Parameters


def test_defaults_are_written_on_construction_and_types_round_trip(parameter_node):
    Parameters = _wrapper()
    parameters = Parameters(parameter_node)
    assert parameter_node.GetParameter("name") == "default" and parameter_node.GetParameter("count") == "0"
    assert parameter_node.HasParameter("volume")  # node parameters are marked present, reference empty
    assert (parameters.name, parameters.count, parameters.ratio, parameters.enabled) == ("default", 0, 0.5, False)
    assert parameters.folder == pathlib.Path() and parameters.colour is Colour.RED and parameters.volume is None
    assert parameters.optionalName is None and parameters.either == 3
    parameters.count, parameters.ratio, parameters.enabled = 7, 2, True  # an int is a float, as in Slicer
    parameters.folder, parameters.colour, parameters.either = pathlib.Path("/tmp/x"), Colour.BLUE, "text"
    assert (parameters.count, parameters.ratio, parameters.enabled, parameters.either) == (7, 2.0, True, "text")
    assert parameters.folder == pathlib.Path("/tmp/x") and parameters.colour is Colour.BLUE
    assert parameters.describe() == "default:7"  # the class keeps its own methods (decorated in place)
    assert Parameters.dataType("count") is int and Parameters.dataType("volume").__name__ == "vtkMRMLScalarVolumeNode"
    assert set(Parameters.allParameters) >= {"name", "count", "volume", "mode"}
    assert slicer_harness.isParameterNodeWrapper(Parameters)


def test_wrong_types_and_none_are_refused_as_in_slicer(parameter_node, mrml_scene):
    parameters = _wrapper()(parameter_node)
    with pytest.raises(ValueError, match="must not be None"):
        parameters.name = None  # Slicer's NotNone; a lenient wrapper would store the text "None"
    with pytest.raises(TypeError):
        parameters.name = 5
    with pytest.raises(TypeError):
        parameters.count = 1.5
    with pytest.raises(TypeError):
        parameters.count = "3"
    with pytest.raises(ValueError):
        parameters.enabled = None
    with pytest.raises(TypeError):
        parameters.colour = "RED"
    with pytest.raises(ValueError):
        parameters.mode = "c"
    with pytest.raises(ValueError):
        parameters.level = 11.0
    with pytest.raises(TypeError):
        parameters.volume = mrml_scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    with pytest.raises(TypeError):
        parameters.volume = "vtkMRMLScalarVolumeNode1"
    with pytest.raises(TypeError):
        parameters.either = 2.5
    parameters.optionalName = None
    volume = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    parameters.volume = volume
    assert parameters.volume is volume and parameter_node.GetNodeReferenceID("volume") == volume.GetID()
    parameters.volume = None
    assert parameters.volume is None
    assert parameter_node.GetParameter("name") == "default"  # nothing refused was written


def test_a_default_that_fails_its_validator_is_refused_at_construction(parameter_node):
    @parameterNodeWrapper
    class Parameters:
        device: Annotated[str, Choice(["cpu", "cuda"])] = "tpu"

    with pytest.raises(ValueError):
        Parameters(parameter_node)


@pytest.mark.parametrize("annotation", [object, set, complex, type("Custom", (), {})])
def test_an_annotation_without_a_serializer_is_refused_at_decoration(annotation):
    slicer_harness.install()
    with pytest.raises(Exception, match="Unable to create serializer"):
        parameterNodeWrapper(type("Parameters", (), {"__annotations__": {"value": annotation}}))


@pytest.mark.parametrize("annotation", [list[int], dict[str, int], tuple[int, str]])
def test_types_slicer_supports_but_the_harness_does_not_are_not_silently_accepted(annotation):
    slicer_harness.install()
    with pytest.raises(NotImplementedError, match="this harness does not implement"):
        parameterNodeWrapper(type("Parameters", (), {"__annotations__": {"value": annotation}}))


@pytest.mark.parametrize("reserved", ["default", "Modified", "AddObserver", "connectGui", "allParameters", "getValue"])
def test_reserved_names_are_refused(reserved):
    slicer_harness.install()
    with pytest.raises(ValueError, match=f"reserved name '{reserved}'"):
        parameterNodeWrapper(type("Parameters", (), {"__annotations__": {reserved: str}}))
    with pytest.raises(ValueError, match=f"reserved name '{reserved}'"):
        parameterNodeWrapper(type("Parameters", (), {"__annotations__": {"x": str}, reserved: lambda self: None}))


def test_observers_and_modify_batches_reach_the_parameter_node(parameter_node):
    import vtk

    parameters = _wrapper()(parameter_node)
    events = []
    tag = parameters.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: events.append(caller))
    parameters.count = 2
    assert events == [parameter_node]
    was = parameters.StartModify()
    parameters.count = 3
    parameters.name = "x"
    parameters.EndModify(was)
    assert len(events) == 2  # one event for the batch
    parameters.RemoveObserver(tag)
    parameters.count = 4
    assert len(events) == 2
    parameters.Modified()
    with pytest.raises(ValueError, match="Cannot find a param"):
        parameters.getValue("missing")
    parameters.setValue("count", 5)
    assert parameters.getValue("count") == 5 and parameters.default("ratio").value == 0.5


def test_gui_binding_needs_qt(parameter_node):
    parameters = _wrapper()(parameter_node)
    with pytest.raises(RuntimeError, match="Qt"):
        parameters.connectGui(object())
    with pytest.raises(RuntimeError, match="Qt"):
        parameters.disconnectGui(0)
