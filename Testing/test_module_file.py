"""The module file (``LymphNodeQuant/LymphNodeQuant.py``): template structure, metadata, its parameter
node on a real scene, its UI file, icon and packaged models. (Tests of the harness itself are in
``test_harness_*.py``.)"""

from __future__ import annotations

import os

import pytest
import slicer_harness
from slicer_harness import packaged_model as _packaged_model_fixture  # noqa: F401  (registers the "packaged_model" fixture)
from slicer_harness import slicer_scene as _slicer_scene_fixture  # noqa: F401  (registers the "slicer_scene" fixture)

pytestmark = pytest.mark.mrml


@pytest.fixture
def module(slicer_scene):
    """The module file, on a scene with the module logics a Slicer scene has."""
    return slicer_harness.load_module()


def test_module_file_follows_the_scripted_module_template(module):
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
    from slicer.util import VTKObservationMixin

    assert module.__file__ == str(slicer_harness.MODULE_DIR / "LymphNodeQuant.py")
    assert issubclass(module.LymphNodeQuant, ScriptedLoadableModule)
    assert issubclass(module.LymphNodeQuantWidget, ScriptedLoadableModuleWidget)
    assert issubclass(module.LymphNodeQuantWidget, VTKObservationMixin)
    assert issubclass(module.LymphNodeQuantLogic, ScriptedLoadableModuleLogic)
    assert issubclass(module.LymphNodeQuantTest, ScriptedLoadableModuleTest)
    parent = slicer_harness.ModuleParent(module.__file__)
    instance = module.LymphNodeQuant(parent)
    assert parent.title == "Lymph Node Quant" and parent.categories == ["Segmentation"]
    assert "short axis" in parent.helpText
    assert parent.icon == str(slicer_harness.MODULE_DIR / "Resources" / "Icons" / "LymphNodeQuant.png")
    assert instance.resourcePath("UI/LymphNodeQuant.ui") == str(
        slicer_harness.MODULE_DIR / "Resources" / "UI" / "LymphNodeQuant.ui"
    )
    # The widget needs Qt, and says so instead of silently doing nothing.
    with pytest.raises((RuntimeError, AttributeError), match="Qt"):
        module.LymphNodeQuantWidget(None).setup()


def test_parameter_node_is_a_singleton_scripted_module_node_in_the_scene(module, mrml_scene):
    import vtk

    logic = module.LymphNodeQuantLogic()
    parameters = logic.getParameterNode()
    node = parameters.parameterNode
    assert node.IsA("vtkMRMLScriptedModuleNode") and node.GetScene() is mrml_scene
    assert node.GetSingletonTag() == "LymphNodeQuant"
    assert (parameters.model, parameters.device, parameters.inputVolume) == ("default", "auto", None)
    ct = mrml_scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "CT")
    parameters.inputVolume = ct
    parameters.device = "cpu"
    again = module.LymphNodeQuantLogic().getParameterNode()
    assert again.parameterNode is node
    assert again.inputVolume is ct and again.device == "cpu"
    assert node.GetNodeReferenceID("inputVolume") == ct.GetID()
    with pytest.raises(ValueError):
        parameters.device = "tpu"
    with pytest.raises(TypeError):
        parameters.outputSegmentation = ct  # a volume is not a segmentation
    # Slicer's wrapper refuses None for a str parameter (it would otherwise store the text "None")
    with pytest.raises(ValueError, match="must not be None"):
        parameters.model = None
    with pytest.raises(TypeError):
        parameters.model = 3
    assert parameters.model == "default" and node.GetParameter("model") == "default"
    parameters.inputVolume = None  # a node reference may be empty
    assert parameters.inputVolume is None and node.GetNodeReferenceID("inputVolume") is None
    # the widget observes the wrapper itself (VTKObservationMixin calls AddObserver on it)
    seen = []
    tag = parameters.AddObserver(vtk.vtkCommand.ModifiedEvent, lambda caller, event: seen.append(event))
    parameters.device = "cuda"
    parameters.RemoveObserver(tag)
    parameters.device = "auto"
    assert seen == ["ModifiedEvent"]


def test_ui_file_names_the_widgets_the_widget_code_uses(module):
    import re
    import xml.etree.ElementTree as ElementTree

    ui_path = slicer_harness.MODULE_DIR / "Resources" / "UI" / "LymphNodeQuant.ui"
    names = {widget.get("name") for widget in ElementTree.parse(ui_path).iter("widget")}
    used = set(re.findall(r"self\.ui\.(\w+)", (slicer_harness.MODULE_DIR / "LymphNodeQuant.py").read_text()))
    assert used <= names, f"widgets used but missing in the .ui file: {sorted(used - names)}"
    bound = {
        prop.find("string").text
        for prop in ElementTree.parse(ui_path).iter("property")
        if prop.get("name") == "SlicerParameterName"
    }
    parameter_fields = set(module.LymphNodeQuantParameterNode.allParameters)
    assert bound <= parameter_fields and {"inputVolume", "outputSegmentation", "referenceSegmentation"} <= bound


def test_icon_is_a_128_pixel_png():
    import numpy as np
    from PIL import Image  # installed with matplotlib (test extra)

    with Image.open(slicer_harness.MODULE_DIR / "Resources" / "Icons" / "LymphNodeQuant.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)
        pixels = np.asarray(icon.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 50  # a drawing, not a flat square


def test_packaged_models_are_registered_for_an_installed_layout(module, tmp_path, monkeypatch):
    from LymphNodeQuantLib.models.model_folder import packaged_models_folders

    installed_models = tmp_path / "qt-scripted-modules" / "Resources" / "Models"
    installed_models.mkdir(parents=True)
    monkeypatch.setenv("LNQ_MODEL_PATH", "")
    module.registerPackagedModels(str(installed_models))
    module.registerPackagedModels(str(installed_models))  # idempotent
    assert os.environ["LNQ_MODEL_PATH"] == str(installed_models)
    assert installed_models in packaged_models_folders()
    module.registerPackagedModels(str(tmp_path / "missing"))
    assert os.environ["LNQ_MODEL_PATH"] == str(installed_models)


def test_model_selector_lists_the_packaged_default_model_first(module, packaged_model):
    models = module.LymphNodeQuantLogic().availableModels()
    assert models[0][0] == "lnq-chest-unet", models
