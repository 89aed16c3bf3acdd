"""Run the Slicer module file (``LymphNodeQuant/LymphNodeQuant.py``) outside Slicer, on real MRML.

The ``slicer-core`` wheel provides the real MRML library (``vtkMRMLScene``, node classes, storage
nodes, module logics) but not the parts of Slicer that need the application or Qt. This harness
adds just those, following Slicer's own ``Base/Python/slicer`` (v5.10 - main), and is never more
lenient than Slicer: what Slicer rejects, the stand-in rejects the same way.

* ``slicer.ScriptedLoadableModule``: the four base classes. ``ScriptedLoadableModule`` needs the
  module's ``parent.path`` (resources and the icon are found next to the module file, as in
  Slicer); the Widget needs Qt and raises; the Logic's parameter node is a real singleton
  ``vtkMRMLScriptedModuleNode``; the Test is a ``unittest.TestCase`` with Slicer's
  ``moduleTestNames`` / ``delayDisplay`` / ``runTest``.
* ``slicer.parameterNodeWrapper``: the decorator with Slicer's serializers and validators for
  ``int``, ``float``, ``str``, ``bool``, ``pathlib`` paths, enums, MRML node classes and unions
  of those: type checks (``IsInstance``), ``None`` refused where Slicer refuses it (``NotNone``),
  ``Choice``/range validators, defaults written (and validated) on construction, a class that
  uses a reserved name refused, an annotation without a serializer refused, and ``AddObserver`` /
  ``RemoveObserver`` / ``Modified`` / ``StartModify`` / ``EndModify`` on the parameter node. Types
  Slicer supports but the harness does not implement (lists, dicts, tuples, ``Any``, parameter
  packs, ``QColor``) raise ``NotImplementedError`` instead of being accepted. GUI binding
  (``connectGui``) needs Qt and raises.
* ``slicer.i18n``: ``tr``/``translate`` return the text untranslated.
* ``qt`` and ``ctk`` (only when not importable): modules whose attributes raise, so widget code
  fails loudly instead of silently doing nothing.
* :func:`make_scene`: a ``vtkMRMLScene`` with the Segmentations, Plots, Tables and Terminologies
  module logics attached, registered as ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()``.
* :func:`slicer_application`: a stand-in ``slicer.app`` with a version (to test refusing old Slicer).
* :class:`FakeTableView`: ``qMRMLTableView``'s models (``qMRMLTableModel`` over a real
  ``vtkMRMLTableNode``, behind a sortable ``QSortFilterProxyModel``), with Slicer's row layout.
* :class:`FakePyTorchUtils`: the PyTorch extension's ``PyTorchUtilsLogic.installTorch`` signature,
  recording calls instead of downloading.

Only the module's Widget needs Qt; its Logic and its self-test run here unchanged.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import logging
import os
import pathlib
import sys
import types
import typing
import unittest
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin, get_type_hints

REPO_ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO_ROOT / "LymphNodeQuant"
MODULE_FILE = MODULE_DIR / "LymphNodeQuant.py"


# ---------------------------------------------------------------------------- qt / ctk stand-ins
class _NoQtModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise AttributeError(f"{self.__name__}.{name} is not available: this harness runs without Qt (widget code needs Slicer).")


# ---------------------------------------------------------------------------- slicer.modules
class ModuleInfo:
    """What ``slicer.modules.<name>`` is in Slicer, as far as Python code uses it: ``path``,
    ``name`` and ``logic()``."""

    def __init__(self, name: str, path: str = "", logic=None) -> None:
        self.name = name
        self.path = path
        self._logic = logic

    def logic(self):
        return self._logic


def _modules_namespace():
    import slicer

    if not isinstance(getattr(slicer, "modules", None), types.SimpleNamespace):
        slicer.modules = types.SimpleNamespace()
    return slicer.modules


def register_module(name: str, path: str = "", logic=None) -> ModuleInfo:
    """Register ``slicer.modules.<name.lower()>`` (as Slicer does for every loaded module)."""
    info = ModuleInfo(name, path, logic)
    setattr(_modules_namespace(), name.lower(), info)
    return info


# ---------------------------------------------------------------------------- ScriptedLoadableModule
class ModuleParent:
    """What Slicer passes as ``parent`` to a scripted module: ``path`` is the module file."""

    def __init__(self, path: str | os.PathLike = MODULE_FILE) -> None:
        self.path = str(path)
        self.title = ""
        self.categories: list[str] = []
        self.dependencies: list[str] = []
        self.contributors: list[str] = []
        self.helpText = ""
        self.acknowledgementText = ""
        self.hidden = False
        self.icon = None


class ScriptedLoadableModule:
    """Slicer's ``ScriptedLoadableModule`` (module metadata; resources next to ``parent.path``)."""

    def __init__(self, parent) -> None:
        import slicer

        self.parent = parent
        self.moduleName = self.__class__.__name__
        parent.title = ""
        parent.categories = []
        parent.dependencies = []
        parent.contributors = []
        parent.helpText = ""
        parent.acknowledgementText = ""
        module_dir = os.path.dirname(self.parent.path)  # AttributeError without a path, as in Slicer
        for extension in (".svg", ".png"):
            icon = os.path.join(module_dir, "Resources/Icons", self.moduleName + extension)
            if os.path.isfile(icon):
                parent.icon = icon
                break
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename: str) -> str:
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def getDefaultModuleDocumentationLink(self, docPage=None) -> str:
        raise RuntimeError("getDefaultModuleDocumentationLink needs slicer.app: run the module inside Slicer.")

    def runTest(self, msec=100, **kwargs):
        module = importlib.import_module(self.__module__)
        className = self.moduleName + "Test"
        try:
            testCaseClass = getattr(module, className)
        except AttributeError:
            raise AssertionError(f"Test case class not found: {self.__module__}.{className} ") from None
        testCase = testCaseClass()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__.removesuffix("Widget")
        self.parent = parent
        if parent is None:
            raise RuntimeError("A module widget without a parent creates Qt widgets: run the module inside Slicer.")

    def resourcePath(self, filename: str) -> str:
        import slicer.util

        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def setup(self) -> None:
        raise RuntimeError("Widgets need Qt: run the module inside Slicer.")


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None) -> None:
        self.moduleName = self.__class__.__name__.removesuffix("Logic")
        self.isSingletonParameterNode = True

    def getParameterNode(self):
        import slicer

        if self.isSingletonParameterNode:
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node:
                if node.GetAttribute("ModuleName") != self.moduleName:
                    node.SetAttribute("ModuleName", self.moduleName)
                return node
        else:
            for index in range(slicer.mrmlScene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
                node = slicer.mrmlScene.GetNthNodeByClass(index, "vtkMRMLScriptedModuleNode")
                if node.GetAttribute("ModuleName") == self.moduleName:
                    return node
        return slicer.mrmlScene.AddNode(self.createParameterNode())

    def createParameterNode(self):
        import slicer

        if slicer.mrmlScene is None:
            return None
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)  # CreateNodeByClass returns a new reference (as in Slicer)
        if self.isSingletonParameterNode:
            node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    """Slicer's test base: ``moduleTestNames`` are the callables with "test" in their name."""

    def __init__(self, *args, **kwargs) -> None:
        self.moduleTestNames: list[str] = []
        super().__init__(*args, **kwargs)
        self.enableScreenshots = False
        self.screenshotScaleFactor = 1.0
        if not self.moduleTestNames:
            self.moduleTestNames = [method for method in dir(self) if "test" in method and callable(getattr(self, method))]

    def delayDisplay(self, message: str, requestedDelay=None, msec=None) -> None:
        logging.info(message)
        self.displayedMessages = [*getattr(self, "displayedMessages", []), message]

    def takeScreenshot(self, name, description, type=-1) -> None:
        self.delayDisplay(description)

    def runTest(self):
        if len(self.moduleTestNames) == 0:
            logging.warning("No test is defined in " + self.__class__.__name__)
            return
        self.setUpClass()
        for test_name in self.moduleTestNames:
            self.setUp()
            getattr(self, test_name)()
            self.tearDown()
        self.tearDownClass()


# ---------------------------------------------------------------------------- parameterNodeWrapper
class Validator:
    def validate(self, value) -> None:
        raise NotImplementedError


class NotNone(Validator):
    def validate(self, value) -> None:
        if value is None:
            raise ValueError("Value must not be None")


class IsNone(Validator):
    def validate(self, value) -> None:
        if value is not None:
            raise ValueError("Value must be None")


class IsInstance(Validator):
    def __init__(self, classtype) -> None:
        self.classtype = classtype

    def validate(self, value) -> None:
        if value is not None and not isinstance(value, self.classtype):
            raise TypeError(f"Value must be of type '{self.classtype}', is type '{type(value)}' value '{value}'")


class Choice(Validator):
    def __init__(self, choices) -> None:
        self.choices = choices

    def validate(self, value) -> None:
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class Exclude(Validator):
    def __init__(self, excludedValues) -> None:
        self.excludedValues = excludedValues

    def validate(self, value) -> None:
        if value in self.excludedValues:
            raise ValueError(f"Value is {value}, but must not be an excluded value: excluded values {self.excludedValues}")


class WithinRange(Validator):
    def __init__(self, minimum, maximum) -> None:
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value) -> None:
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


class Minimum(Validator):
    def __init__(self, minimum) -> None:
        self.minimum = minimum

    def validate(self, value) -> None:
        if value < self.minimum:
            raise ValueError(f"Value must be greater than {self.minimum}, is {value}")


class Maximum(Validator):
    def __init__(self, maximum) -> None:
        self.maximum = maximum

    def validate(self, value) -> None:
        if value > self.maximum:
            raise ValueError(f"Value must be less than {self.maximum}, is {value}")


class Default:
    """Annotation giving a parameter's default (``value``, or ``generator()`` each time)."""

    def __init__(self, value=None, *, generator=None) -> None:
        self._value = value
        self._generator = generator

    @property
    def value(self):
        return self._generator() if self._generator else self._value


class _Serializer:
    """Reads and writes one parameter type on a ``vtkMRMLScriptedModuleNode`` (Slicer's layout)."""

    def __init__(self, kind=None, validators=()) -> None:
        self.kind = kind
        self.validators = list(validators)

    def can_serialize(self, kind) -> bool:
        return kind is self.kind

    def validate(self, value) -> None:
        for validator in self.validators:
            validator.validate(value)

    def isIn(self, node, name: str) -> bool:
        return bool(node.HasParameter(name))

    def write(self, node, name: str, value) -> None:
        self.validate(value)
        self._write(node, name, value)

    def _write(self, node, name: str, value) -> None:
        node.SetParameter(name, str(value))

    def remove(self, node, name: str) -> None:
        node.UnsetParameter(name)


class _NumberSerializer(_Serializer):
    def __init__(self, kind) -> None:
        super().__init__(kind, [NotNone(), IsInstance((int, float) if kind is float else int)])

    def can_serialize(self, kind) -> bool:
        return kind in (int, float)

    def default(self):
        return 0

    def read(self, node, name):
        return self.kind(node.GetParameter(name))


class _StringSerializer(_Serializer):
    def __init__(self) -> None:
        super().__init__(str, [NotNone(), IsInstance(str)])

    def default(self):
        return ""

    def read(self, node, name):
        return node.GetParameter(name)


class _BoolSerializer(_Serializer):
    def __init__(self) -> None:
        super().__init__(bool, [NotNone(), IsInstance(bool)])

    def default(self):
        return False

    def _write(self, node, name, value) -> None:
        node.SetParameter(name, "True" if value else "False")

    def read(self, node, name):
        return node.GetParameter(name) == "True"


_PATH_TYPES = (
    pathlib.Path,
    pathlib.PosixPath,
    pathlib.WindowsPath,
    pathlib.PurePath,
    pathlib.PurePosixPath,
    pathlib.PureWindowsPath,
)


class _PathSerializer(_Serializer):
    def __init__(self, kind) -> None:
        super().__init__(kind, [NotNone(), IsInstance(kind)])

    def can_serialize(self, kind) -> bool:
        return kind in _PATH_TYPES

    def default(self):
        return self.kind()

    def read(self, node, name):
        return self.kind(node.GetParameter(name))


class _EnumSerializer(_Serializer):
    def __init__(self, kind) -> None:
        if len(kind) == 0:
            raise ValueError("Cannot serialize empty Enum.")
        super().__init__(kind, [IsInstance(kind)])

    def can_serialize(self, kind) -> bool:
        return isinstance(kind, type) and issubclass(kind, enum.Enum)

    def default(self):
        return next(iter(self.kind))

    def _write(self, node, name, value) -> None:
        node.SetParameter(name, value.name)

    def read(self, node, name):
        key = node.GetParameter(name)
        try:
            return self.kind[key]
        except KeyError as error:
            raise ValueError(f"Found {key!r} in parameter node but it is not a name in {self.kind!r}") from error


class _NodeSerializer(_Serializer):
    def __init__(self, kind) -> None:
        super().__init__(kind, [IsInstance(kind)])

    def can_serialize(self, kind) -> bool:
        return _is_mrml_node_class(kind)

    def default(self):
        return None

    def _write(self, node, name, value) -> None:
        node.SetParameter(name, "")  # marks the parameter as present even when it holds None (as Slicer)
        node.SetNodeReferenceID(name, value.GetID() if value is not None else None)

    def read(self, node, name):
        return node.GetNodeReference(name)

    def remove(self, node, name) -> None:
        node.UnsetParameter(name)
        node.RemoveNodeReferenceIDs(name)


class _NoneSerializer(_Serializer):
    def __init__(self) -> None:
        super().__init__(type(None), [IsNone()])

    def default(self):
        return None

    def _write(self, node, name, value) -> None:
        node.SetParameter(name, "True")

    def read(self, node, name):
        return None


class _UnionSerializer(_Serializer):
    def __init__(self, serializers) -> None:
        super().__init__(None, [])
        self.serializers = serializers

    def default(self):
        if len(self.serializers) == 2 and isinstance(self.serializers[1], _NoneSerializer):
            return None
        return self.serializers[0].default()

    def isIn(self, node, name) -> bool:
        return any(serializer.isIn(node, f"{name}.{index}") for index, serializer in enumerate(self.serializers))

    def write(self, node, name, value) -> None:
        self.validate(value)
        error = None
        for index, serializer in enumerate(self.serializers):
            if serializer.can_serialize(type(value)):
                try:
                    serializer.validate(value)
                except Exception as exception:  # noqa: BLE001 - try the next member, as Slicer does
                    error = exception
                    continue
                was_modifying = node.StartModify()
                try:
                    self.remove(node, name)
                    serializer.write(node, f"{name}.{index}", value)
                finally:
                    node.EndModify(was_modifying)
                return
        if error is not None:
            raise error
        raise TypeError(f"Unable to write value '{value}' of type '{type(value)}'")

    def read(self, node, name):
        for index, serializer in enumerate(self.serializers):
            if serializer.isIn(node, f"{name}.{index}"):
                return serializer.read(node, f"{name}.{index}")
        raise KeyError(f"Unable to find value for name: {name}")

    def remove(self, node, name) -> None:
        for index, serializer in enumerate(self.serializers):
            serializer.remove(node, f"{name}.{index}")


def _is_mrml_node_class(kind) -> bool:
    import slicer

    return isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode)


_SLICER_ONLY_TYPES = (list, tuple, dict, typing.Any)


def _split_annotations(annotation):
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0], list(get_args(annotation)[1:])
    return annotation, []


def _create_serializer(kind, annotations):
    """(serializer with its validators, annotations left over); raises where Slicer raises."""
    validators = [
        a() if isinstance(a, type) else a
        for a in annotations
        if isinstance(a, Validator) or (isinstance(a, type) and issubclass(a, Validator))
    ]
    rest = [a for a in annotations if not (isinstance(a, Validator) or (isinstance(a, type) and issubclass(a, Validator)))]
    if isinstance(kind, types.UnionType):
        kind = typing.Union[get_args(kind)]
    if get_origin(kind) is typing.Union:
        serializer = _UnionSerializer([_create_serializer(*_split_annotations(arg))[0] for arg in get_args(kind)])
    elif kind in (int, float):
        serializer = _NumberSerializer(kind)
    elif kind is str:
        serializer = _StringSerializer()
    elif kind is bool:
        serializer = _BoolSerializer()
    elif kind in _PATH_TYPES:
        serializer = _PathSerializer(kind)
    elif kind is type(None):
        serializer = _NoneSerializer()
    elif _is_mrml_node_class(kind):
        serializer = _NodeSerializer(kind)
    elif isinstance(kind, type) and issubclass(kind, enum.Enum):
        serializer = _EnumSerializer(kind)
    elif kind in _SLICER_ONLY_TYPES or get_origin(kind) in (list, tuple, dict) or getattr(kind, "__name__", "") == "QColor":
        raise NotImplementedError(
            f"Slicer can serialize {kind}, but this harness does not implement it: add it to Testing/slicer_harness.py."
        )
    else:
        raise Exception(f"Unable to create serializer for type: {kind}")
    serializer.validators += validators
    return serializer, rest


class _ParameterInfo:
    def __init__(self, basename: str, serializer: _Serializer, default: Default, unalteredType) -> None:
        self.basename = basename
        self.serializer = serializer
        self.default = default
        self.unalteredType = unalteredType

    def read(self, node):
        if not self.serializer.isIn(node, self.basename):
            self.serializer.write(node, self.basename, self.default.value)
        return self.serializer.read(node, self.basename)

    def write(self, node, value) -> None:
        was_modifying = node.StartModify()
        try:
            self.serializer.write(node, self.basename, value)
        finally:
            node.EndModify(was_modifying)


_RESERVED_NAMES = (
    "allParameters", "_is_parameter_node_wrapper", "default", "isCached", "dataType", "getValue", "setValue",
    "connectGui", "connectParametersToGui", "disconnectGui", "StartModify", "EndModify", "AddObserver",
    "RemoveObserver", "Modified",
)  # fmt: skip


def parameterNodeWrapper(classtype=None):
    """Slicer's ``@parameterNodeWrapper`` (without GUI binding): typed, validated parameter access."""

    def wrap(cls):
        members = get_type_hints(cls, include_extras=True)
        all_parameters: dict[str, _ParameterInfo] = {}
        for name, annotation in members.items():
            kind, annotations = _split_annotations(annotation)
            try:
                serializer, annotations = _create_serializer(kind, annotations)
            except NotImplementedError:
                raise
            except Exception as error:
                raise Exception(f"Unable to create serializer for {cls} member {name}") from error
            if hasattr(cls, name):
                default = Default(getattr(cls, name))
            else:
                defaults = [a for a in annotations if isinstance(a, Default)]
                if len(defaults) > 1:
                    raise Exception("Multiple defaults found")
                annotations = [a for a in annotations if not isinstance(a, Default)]
                default = defaults[0] if defaults else Default(serializer.default())
            if annotations:
                logging.warning(f"Unused annotations: {annotations}")
            all_parameters[name] = _ParameterInfo(name, serializer, default, annotation)
            setattr(cls, name, property(
                lambda self, _name=name: self.allParameters[_name].read(self.parameterNode),
                lambda self, value, _name=name: self.allParameters[_name].write(self.parameterNode, value),
            ))  # fmt: skip

        def checked_setattr(attribute, value):
            if hasattr(cls, attribute):
                raise ValueError(f"Cannot use reserved name '{attribute}' in a parameterNodeWrapper")
            setattr(cls, attribute, value)

        def check_name(name):
            if name not in all_parameters:
                raise ValueError(f"Cannot find a param with the given name: {name}")

        def init(self, parameterNode, prefix=None):
            if prefix:
                raise NotImplementedError("parameter packs (prefix) are not implemented in this harness")
            self.parameterNode = parameterNode
            for info in self.allParameters.values():
                if not info.serializer.isIn(parameterNode, info.basename):
                    info.serializer.write(parameterNode, info.basename, info.default.value)

        def needs_qt(*args, **kwargs):
            raise RuntimeError("GUI binding (connectGui) needs Qt: run the module inside Slicer.")

        checked_setattr("allParameters", all_parameters)
        checked_setattr("_is_parameter_node_wrapper", True)
        cls.__init__ = init
        checked_setattr("default", lambda self, name: (check_name(name), self.allParameters[name].default)[1])
        checked_setattr("isCached", lambda self, name: (check_name(name), True)[1])  # every serializer here caches in Slicer
        checked_setattr("dataType", staticmethod(lambda name: (check_name(name), all_parameters[name].unalteredType)[1]))
        checked_setattr("getValue", lambda self, name: (check_name(name), getattr(self, name))[1])
        checked_setattr("setValue", lambda self, name, value: (check_name(name), setattr(self, name, value))[1])
        checked_setattr("connectGui", needs_qt)
        checked_setattr("connectParametersToGui", needs_qt)
        checked_setattr("disconnectGui", needs_qt)
        checked_setattr("StartModify", lambda self: self.parameterNode.StartModify())
        checked_setattr("EndModify", lambda self, wasModified: self.parameterNode.EndModify(wasModified))
        checked_setattr(
            "AddObserver", lambda self, event, callback, priority=0.0: self.parameterNode.AddObserver(event, callback, priority)
        )
        checked_setattr("RemoveObserver", lambda self, tag: self.parameterNode.RemoveObserver(tag))
        checked_setattr("Modified", lambda self: self.parameterNode.Modified())
        return cls

    return wrap if classtype is None else wrap(classtype)


def isParameterNodeWrapper(classOrObj) -> bool:
    return getattr(classOrObj, "_is_parameter_node_wrapper", False)


# ---------------------------------------------------------------------------- slicer.app
class FakeApplication:
    """``slicer.app`` as far as version checks and testing mode go (qSlicerCoreApplication)."""

    def __init__(self, major: int, minor: int, testing: bool = True) -> None:
        self.majorVersion = major
        self.minorVersion = minor
        self._testing = testing

    def testingEnabled(self) -> bool:
        return self._testing

    def processEvents(self) -> None:
        pass


@contextlib.contextmanager
def slicer_application(major: int, minor: int, testing: bool = True):
    """``slicer.app`` reports 3D Slicer ``major.minor`` inside the block."""
    import slicer

    missing = object()
    previous = getattr(slicer, "app", missing)
    slicer.app = FakeApplication(major, minor, testing)
    try:
        yield slicer.app
    finally:
        if previous is missing:
            del slicer.app
        else:
            slicer.app = previous


# ---------------------------------------------------------------------------- scene
def make_scene():
    """A ``vtkMRMLScene`` set as ``slicer.mrmlScene`` with the module logics a Slicer scene has
    (Segmentations, Plots, Tables, Terminologies), each also ``slicer.modules.<name>.logic()``."""
    import slicer

    scene = slicer.vtkMRMLScene()
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
    segmentations.SetMRMLScene(scene)
    scene.segmentations_logic = segmentations
    _attach_module_logics(scene)
    slicer.mrmlScene = scene
    return scene


def _attach_module_logics(scene):
    """Attach the Plots, Tables and Terminologies logics (and the scene's Segmentations logic) to
    ``scene`` and register them as ``slicer.modules.<name>.logic()``.

    The slicer-core wheel ships no terminology tables, so the Terminologies logic's attempt to load
    Slicer's default tables is silenced (it logs one error per table and continues, as Slicer
    would with a damaged installation); serializing entries needs no table.
    """
    import slicer
    import vtk

    logics = {
        "Segmentations": scene.segmentations_logic,
        "Plots": slicer.vtkSlicerPlotsLogic(),
        "Tables": slicer.vtkSlicerTablesLogic(),
    }
    for name, logic in logics.items():
        if name != "Segmentations":
            logic.SetMRMLScene(scene)
    terminologies = slicer.vtkSlicerTerminologiesModuleLogic()
    verbosity = vtk.vtkLogger.GetCurrentVerbosityCutoff()
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_OFF)
    try:
        terminologies.SetMRMLScene(scene)
    finally:
        vtk.vtkLogger.SetStderrVerbosity(verbosity)
    logics["Terminologies"] = terminologies
    for name, logic in logics.items():
        register_module(name, logic=logic)
    scene.module_logics = logics  # keep them alive as long as the scene
    return scene


# ---------------------------------------------------------------------------- qMRMLTableView models
class FakeModelIndex:
    """``QModelIndex``: row, column, validity."""

    def __init__(self, row: int = -1, column: int = -1) -> None:
        self._row, self._column = row, column

    def row(self) -> int:
        return self._row

    def column(self) -> int:
        return self._column

    def isValid(self) -> bool:
        return self._row >= 0 and self._column >= 0


class FakeQMRMLTableModel:
    """``qMRMLTableModel`` over a real ``vtkMRMLTableNode``, with Slicer's layout
    (``qMRMLTableModel::updateModelFromMRML`` / ``mrmlTableRowIndex``): unless the node uses column
    titles as header, model row 0 holds the column names; a first column used as row header is not
    a model column; ``transposed`` swaps rows and columns."""

    def __init__(self, table_node, transposed: bool = False) -> None:
        self.node = table_node
        self.transposed = transposed

    def _offsets(self):
        row_offset = 0 if self.node.GetUseColumnTitleAsColumnHeader() else -1
        column_offset = 1 if self.node.GetUseFirstColumnAsRowHeader() else 0
        return row_offset, column_offset

    def rowCount(self) -> int:
        row_offset, column_offset = self._offsets()
        table = self.node.GetTable()
        rows, columns = table.GetNumberOfRows() - row_offset, table.GetNumberOfColumns() - column_offset
        return columns if self.transposed else rows

    def columnCount(self) -> int:
        row_offset, column_offset = self._offsets()
        table = self.node.GetTable()
        rows, columns = table.GetNumberOfRows() - row_offset, table.GetNumberOfColumns() - column_offset
        return rows if self.transposed else columns

    def index(self, row: int, column: int) -> FakeModelIndex:
        return FakeModelIndex(row, column)

    def data(self, index: FakeModelIndex):
        row_offset, column_offset = self._offsets()
        model_row, model_column = (index.column(), index.row()) if self.transposed else (index.row(), index.column())
        table_row, table_column = model_row + row_offset, model_column + column_offset
        if table_row < 0:
            return self.node.GetTable().GetColumnName(table_column)
        return self.node.GetTable().GetValue(table_row, table_column).ToString()

    def mrmlTableRowIndex(self, index: FakeModelIndex) -> int:
        position = index.column() if self.transposed else index.row()
        return position if self.node.GetUseColumnTitleAsColumnHeader() else position - 1

    def mrmlTableColumnIndex(self, index: FakeModelIndex) -> int:
        position = index.row() if self.transposed else index.column()
        return position + 1 if self.node.GetUseFirstColumnAsRowHeader() else position


class FakeSortFilterProxyModel:
    """``QSortFilterProxyModel``: view rows are source rows in sorted order."""

    def __init__(self, source: FakeQMRMLTableModel) -> None:
        self.source = source
        self._order = list(range(source.rowCount()))

    def sort(self, column: int, descending: bool = False) -> None:
        def key(row):
            text = self.source.data(FakeModelIndex(row, column))
            try:
                return (0, float(text), "")
            except (TypeError, ValueError):
                return (1, 0.0, str(text))

        self._order = sorted(range(self.source.rowCount()), key=key, reverse=descending)

    def index(self, row: int, column: int) -> FakeModelIndex:
        return FakeModelIndex(row, column)

    def mapToSource(self, index: FakeModelIndex) -> FakeModelIndex:
        if not index.isValid() or index.row() >= len(self._order):
            return FakeModelIndex()
        return FakeModelIndex(self._order[index.row()], index.column())

    def data(self, index: FakeModelIndex):
        return self.source.data(self.mapToSource(index))


class FakeTableView:
    """``qMRMLTableView`` showing ``table_node``: ``tableModel()`` and ``sortFilterProxyModel()``."""

    def __init__(self, table_node, transposed: bool = False) -> None:
        self._model = FakeQMRMLTableModel(table_node, transposed)
        self._proxy = FakeSortFilterProxyModel(self._model)

    def tableModel(self) -> FakeQMRMLTableModel:
        return self._model

    def sortFilterProxyModel(self) -> FakeSortFilterProxyModel:
        return self._proxy

    def mrmlTableNode(self):
        return self._model.node


# ---------------------------------------------------------------------------- PyTorch extension
class FakePyTorchUtils(types.ModuleType):
    """The PyTorch extension's ``PyTorchUtils`` module: ``PyTorchUtilsLogic().installTorch`` with the
    extension's signature; records the calls and validates the version requirement as pip would."""

    def __init__(self, succeed: bool = True) -> None:
        super().__init__("PyTorchUtils")
        self.calls: list[dict] = []
        module = self

        class PyTorchUtilsLogic:
            def installTorch(
                self,
                askConfirmation=False,
                forceComputationBackend=None,
                torchVersionRequirement=None,
                torchvisionVersionRequirement=None,
            ):
                from packaging.specifiers import SpecifierSet

                SpecifierSet(torchVersionRequirement or "")  # InvalidSpecifier, as pip/light-the-torch would fail
                module.calls.append(dict(askConfirmation=askConfirmation, forceComputationBackend=forceComputationBackend,
                                         torchVersionRequirement=torchVersionRequirement,
                                         torchvisionVersionRequirement=torchvisionVersionRequirement))  # fmt: skip
                return types.SimpleNamespace(__version__="2.8.0") if succeed else None

        self.PyTorchUtilsLogic = PyTorchUtilsLogic


# ---------------------------------------------------------------------------- VTK calls made by module code
@contextlib.contextmanager
def record_vtk_calls(folder: str | os.PathLike = MODULE_DIR):
    """Record ``(class name, method name)`` of every call on a VTK object (MRML, segmentation and
    plain VTK classes) made from a Python file under ``folder`` while the block runs.

    Calls made through the class (``slicer.vtkX.StaticMethod()``) are not seen by the profiler;
    they name their class in the source and are found there."""
    prefix = str(Path(folder).resolve())
    calls: set[tuple[str, str]] = set()

    def profile(frame, event, arg):
        if event != "c_call" or not frame.f_code.co_filename.startswith(prefix):
            return
        owner = getattr(arg, "__self__", None)
        kind = owner if isinstance(owner, type) else type(owner)
        if kind.__name__.startswith("vtk"):
            calls.add((kind.__name__, arg.__name__))

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        yield calls
    finally:
        sys.setprofile(previous)


# ---------------------------------------------------------------------------- installation
def install(module_dir: str | os.PathLike = MODULE_DIR) -> types.ModuleType:
    """Register the stand-in modules (idempotent), put ``module_dir`` on ``sys.path`` as Slicer does
    for a scripted module's folder, and return the ``slicer`` package."""
    import slicer

    if "slicer.ScriptedLoadableModule" not in sys.modules:
        module = types.ModuleType("slicer.ScriptedLoadableModule")
        items = (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)
        for item in items:
            setattr(module, item.__name__, item)
        module.__all__ = [item.__name__ for item in items]
        sys.modules[module.__name__] = module
        slicer.ScriptedLoadableModule = module
    if "slicer.parameterNodeWrapper" not in sys.modules:
        module = types.ModuleType("slicer.parameterNodeWrapper")
        items = (
            parameterNodeWrapper,
            isParameterNodeWrapper,
            Default,
            Validator,
            NotNone,
            IsNone,
            IsInstance,
            Choice,
            Exclude,
            WithinRange,
            Minimum,
            Maximum,
        )
        for item in items:
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
    if str(module_dir) not in sys.path:
        sys.path.insert(0, str(module_dir))
    return slicer


def load_module(module_dir: str | os.PathLike = MODULE_DIR):
    """Import ``LymphNodeQuant.py`` from ``module_dir`` through the harness, register it as
    ``slicer.modules.lymphnodequant`` (its ``path`` is the module file) and return it."""
    install(module_dir)
    module = importlib.import_module("LymphNodeQuant")
    register_module("LymphNodeQuant", str(Path(module.__file__)))
    return module


def run_like_ctest(module) -> unittest.TestResult:
    """What ``slicer_add_python_unittest`` runs: ``slicer.testing.runUnitTest`` loads the module's
    test cases with ``unittest.TestLoader().loadTestsFromName`` and runs them with a text runner."""
    suite = unittest.TestLoader().loadTestsFromModule(module)
    return unittest.TextTestRunner(verbosity=2, stream=sys.stderr).run(suite)


# ---------------------------------------------------------------------------- fixtures
PACKAGED_MODEL_DIR = MODULE_DIR / "Resources" / "Models" / "lnq-chest-unet"


def _packaged_model() -> str:
    """The registry name of the packaged default model; fails (never skips) when it is absent."""
    import pytest

    if not (PACKAGED_MODEL_DIR / "model.json").is_file():
        pytest.fail(
            f"the packaged model is missing: {PACKAGED_MODEL_DIR}/model.json (reproduce it with `lnq train` + `lnq export`)"
        )
    return "default"


def _slicer_scene(mrml_scene):
    """The conftest scene plus the Plots, Tables and Terminologies logics a Slicer scene has."""
    return _attach_module_logics(mrml_scene)


try:
    import pytest as _pytest

    packaged_model = _pytest.fixture(scope="session", name="packaged_model")(_packaged_model)
    slicer_scene = _pytest.fixture(name="slicer_scene")(_slicer_scene)
except ImportError:  # pragma: no cover - the harness is also importable without pytest
    pass
