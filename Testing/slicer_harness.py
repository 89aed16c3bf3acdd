"""Run the Slicer module file (``LymphNodeQuant/LymphNodeQuant.py``) outside Slicer, on real MRML.

The ``slicer-core`` wheel provides the real MRML library (``vtkMRMLScene``, node classes, storage
nodes, the Segmentations logic) but not the parts of Slicer that need the application or Qt. This
harness adds just those, following Slicer's own ``Base/Python/slicer`` implementations:

* ``slicer.ScriptedLoadableModule``: ``ScriptedLoadableModule``, ``ScriptedLoadableModuleWidget``,
  ``ScriptedLoadableModuleLogic`` (real singleton ``vtkMRMLScriptedModuleNode`` parameter nodes in
  ``slicer.mrmlScene``) and ``ScriptedLoadableModuleTest`` (a ``unittest.TestCase``).
* ``slicer.parameterNodeWrapper``: ``parameterNodeWrapper`` maps the annotated fields onto the
  real parameter node (parameters and node references); GUI binding (``connectGui``) needs Qt and
  raises here.
* ``slicer.i18n``: ``tr``/``translate`` return the text untranslated.
* ``qt`` and ``ctk`` (only when not importable): modules whose attributes raise, so the module
  file imports but any widget code fails loudly instead of silently doing nothing.

Only the module's Widget needs Qt; its Logic and its self-test run here unchanged.
"""

from __future__ import annotations

import importlib
import logging
import sys
import types
import unittest
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO_ROOT / "LymphNodeQuant"


# ---------------------------------------------------------------------------- qt / ctk stand-ins
class _NoQtModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{self.__name__}.{name} is not available: this harness runs without Qt (widget code needs Slicer).")


# ---------------------------------------------------------------------------- ScriptedLoadableModule
class ModuleParent:
    """What Slicer passes as ``parent`` to a scripted module (attributes the module sets)."""

    def __init__(self) -> None:
        self.title = ""
        self.categories: list[str] = []
        self.dependencies: list[str] = []
        self.contributors: list[str] = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.hidden = False


class ScriptedLoadableModule:
    def __init__(self, parent) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = self.moduleName

    def resourcePath(self, filename: str) -> str:
        return str(MODULE_DIR / "Resources" / filename)

    def getDefaultModuleDocumentationLink(self, docPage=None) -> str:
        return "https://slicer.readthedocs.io/"


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__.removesuffix("Widget")

    def resourcePath(self, filename: str) -> str:
        return str(MODULE_DIR / "Resources" / filename)

    def setup(self) -> None:
        raise RuntimeError("Widgets need Qt: run the module inside Slicer.")


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.parent = parent
        self.moduleName = self.__class__.__name__.removesuffix("Logic")
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        import slicer

        if self.isSingletonParameterNode:
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                return node
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        import slicer

        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # CreateNodeByClass returns a new reference (as in Slicer)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        node.SetAttribute("ModuleName", self.moduleName)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message: str, requestedDelay=None, msec=None) -> None:
        logging.info(message)

    def takeScreenshot(self, name, description, type=-1) -> None:
        logging.info(f"screenshot skipped (no views): {name}")


# ---------------------------------------------------------------------------- parameterNodeWrapper
class Choice:
    def __init__(self, choices) -> None:
        self.choices = list(choices)


class WithinRange:
    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum


class Default:
    def __init__(self, value) -> None:
        self.value = value


def _plain_type(annotation):
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0], list(get_args(annotation)[1:])
    return annotation, []


def _is_mrml_node_type(kind) -> bool:
    return isinstance(kind, type) and kind.__name__.startswith("vtkMRML")


def _make_property(name: str, kind, extras: list, default):
    choices = next((extra.choices for extra in extras if isinstance(extra, Choice)), None)

    if _is_mrml_node_type(kind):

        def getter(self):
            return self.parameterNode.GetNodeReference(name)

        def setter(self, node):
            if node is not None and not node.IsA(kind.__name__):
                raise TypeError(f"{name} must be a {kind.__name__}, got {node.GetClassName()}")
            self.parameterNode.SetNodeReferenceID(name, node.GetID() if node is not None else None)

        return property(getter, setter)

    def getter(self):
        if not self.parameterNode.HasParameter(name):
            return default
        text = self.parameterNode.GetParameter(name)
        if kind is bool:
            return text == "True"
        return kind(text)

    def setter(self, value):
        if choices is not None and value not in choices:
            raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        self.parameterNode.SetParameter(name, str(kind(value)))

    return property(getter, setter)


def parameterNodeWrapper(cls):
    """Typed access to a ``vtkMRMLScriptedModuleNode`` (as Slicer's decorator, without GUI binding)."""
    hints = get_type_hints(cls, include_extras=True)
    defaults = {name: getattr(cls, name) for name in hints if hasattr(cls, name)}
    namespace: dict[str, Any] = {"__doc__": cls.__doc__, "__module__": cls.__module__, "allParameters": dict(hints)}
    for name, annotation in hints.items():
        kind, extras = _plain_type(annotation)
        default = defaults.get(name, next((e.value for e in extras if isinstance(e, Default)), None))
        namespace[name] = _make_property(name, kind, extras, default)

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        for name, annotation in hints.items():  # write defaults, as Slicer's wrapper does
            kind, _ = _plain_type(annotation)
            if not _is_mrml_node_type(kind) and not parameterNode.HasParameter(name) and defaults.get(name) is not None:
                setattr(self, name, defaults[name])

    def connectGui(self, gui):
        raise RuntimeError("connectGui needs Qt: run the module inside Slicer.")

    def disconnectGui(self, tag):
        raise RuntimeError("disconnectGui needs Qt: run the module inside Slicer.")

    namespace.update(__init__=__init__, connectGui=connectGui, disconnectGui=disconnectGui)
    return type(cls.__name__, (), namespace)


# ---------------------------------------------------------------------------- installation
def install() -> types.ModuleType:
    """Register the stand-in modules (idempotent) and return the ``slicer`` package."""
    import slicer

    if "slicer.ScriptedLoadableModule" not in sys.modules:
        module = types.ModuleType("slicer.ScriptedLoadableModule")
        for item in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
            setattr(module, item.__name__, item)
        module.__all__ = [item.__name__ for item in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)]
        sys.modules[module.__name__] = module
        slicer.ScriptedLoadableModule = module
    if "slicer.parameterNodeWrapper" not in sys.modules:
        module = types.ModuleType("slicer.parameterNodeWrapper")
        for item in (parameterNodeWrapper, Choice, WithinRange, Default):
            setattr(module, item.__name__, item)
        sys.modules[module.__name__] = module
        slicer.parameterNodeWrapper = module
    if "slicer.i18n" not in sys.modules:
        module = types.ModuleType("slicer.i18n")
        module.tr = lambda text: text
        module.translate = lambda context, text: text
        sys.modules[module.__name__] = module
        slicer.i18n = module
    for name in ("qt", "ctk"):
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError:
                sys.modules[name] = _NoQtModule(name)
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))
    return slicer


def load_module():
    """Import ``LymphNodeQuant/LymphNodeQuant.py`` through the harness and return it."""
    install()
    return importlib.import_module("LymphNodeQuant")


# ---------------------------------------------------------------------------- fixtures
PACKAGED_MODEL_DIR = MODULE_DIR / "Resources" / "Models" / "lnq-chest-unet"


def _packaged_model() -> str:
    """The registry name of the packaged default model; fails (never skips) when it is absent."""
    import pytest

    if not (PACKAGED_MODEL_DIR / "model.json").is_file():
        pytest.fail(f"the packaged model is missing: {PACKAGED_MODEL_DIR}/model.json (reproduce it with `lnq train` + `lnq export`)")
    return "default"


try:
    import pytest as _pytest

    packaged_model = _pytest.fixture(scope="session", name="packaged_model")(_packaged_model)
except ImportError:  # pragma: no cover - the harness is also importable without pytest
    pass
