"""LymphNodeQuant: find, outline and measure mediastinal lymph nodes on chest CT in 3D Slicer.

Module layout (Slicer ExtensionWizard template):

* ``LymphNodeQuant``: module metadata.
* ``LymphNodeQuantParameterNode``: the GUI state, saved with the scene.
* ``LymphNodeQuantWidget``: the GUI. Segmentation runs in a background engine process
  (``lnq segment --progress json``) polled by a timer, so Slicer stays responsive; Cancel kills the
  whole process tree and leaves the scene unchanged.
* ``LymphNodeQuantLogic``: ``segment`` / ``measure`` / ``compare``, blocking and usable from the
  Python console. The MRML conversions live in the Qt-free ``LymphNodeQuantMRML`` package and
  the numerics in the ``LymphNodeQuantLib`` engine.
* ``LymphNodeQuantTest``: end-to-end self-test on a synthetic chest CT phantom.
"""

import logging
import os
from typing import Annotated, Optional

import vtk

import qt
import ctk  # noqa: F401  (the UI file uses ctk widgets)
import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import *  # noqa: F403
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode

from LymphNodeQuantMRML.core import (
    ATTRIBUTE_DETECTION_TABLE_ID,
    ATTRIBUTE_PLOT_CHART_ID,
    DEVICES,
    BackgroundSegmentation,
    LymphNodeQuantCore,
    check_device,
    checked_ct,
)

#
# LymphNodeQuant
#


class LymphNodeQuant(ScriptedLoadableModule):  # noqa: F405
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)  # noqa: F405
        self.parent.title = _("Lymph Node Quant")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["LymphNodeQuant developers"]
        self.parent.helpText = _(
            "Finds, outlines and measures mediastinal lymph nodes on chest CT. Select a CT, click "
            "<b>Segment</b>: each node becomes a segment (SNOMED terminology, mediastinum) and a table "
            "lists its RECIST short axis, long axis and volume (enlarged nodes marked). Choose a "
            "reference segmentation to score the result with the LNQ2023 Dice, ASSD and HD95. Click a "
            "table row to centre the views on that node. "
            '<a href="https://github.com/LymphNodeQuant/SlicerLymphNodeQuant#readme">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Evaluation follows the LNQ2023 MICCAI challenge (mediastinal lymph node quantification). "
            "Module structure from the 3D Slicer ExtensionWizard template."
        )


#
# LymphNodeQuantParameterNode
#


@parameterNodeWrapper
class LymphNodeQuantParameterNode:
    """
    inputVolume - the chest CT to segment.
    model - model registry name or model folder ("default" = the packaged model).
    device - "auto", "cpu" or "cuda".
    outputSegmentation - write into this segmentation (replacing its segments); empty = new node.
    referenceSegmentation - optional reference to score against (Dice, ASSD, HD95, detection).
    measurementTable / evaluationTable - the result tables of the last run.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = "default"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    outputSegmentation: vtkMRMLSegmentationNode
    referenceSegmentation: vtkMRMLSegmentationNode
    measurementTable: vtkMRMLTableNode
    evaluationTable: vtkMRMLTableNode


#
# LymphNodeQuantWidget
#


class LymphNodeQuantWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):  # noqa: F405
    POLL_INTERVAL_MS = 200

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)  # noqa: F405
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job: Optional[BackgroundSegmentation] = None
        self._jobVolumeNode = None
        self._jobOutputNode = None
        self._timer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)  # noqa: F405

        uiWidget = slicer.util.loadUI(self.resourcePath("UI/LymphNodeQuant.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = LymphNodeQuantLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(self.POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self._pollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self._populateModels()
        self.ui.deviceComboBox.clear()
        for device, label in (("auto", _("auto (GPU if available)")), ("cpu", _("CPU")), ("cuda", _("GPU (CUDA)"))):
            self.ui.deviceComboBox.addItem(label, device)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self._onDeviceChanged)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasureButton)
        self.ui.measurementTableView.connect("clicked(QModelIndex)", self.onTableRowClicked)

        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)

    def onSceneStartClose(self, caller, event) -> None:
        self.onCancelButton()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode and not firstVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGui)
            self._updateGui()

    # ------------------------------------------------------------------ GUI state
    def _populateModels(self) -> None:
        self.ui.modelComboBox.clear()
        for name, description in self.logic.availableModels():
            self.ui.modelComboBox.addItem(name, name)
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, description, qt.Qt.ToolTipRole)

    def _onModelChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def _onDeviceChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    def _updateGui(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        modelIndex = self.ui.modelComboBox.findData(self._parameterNode.model)
        if modelIndex >= 0 and modelIndex != self.ui.modelComboBox.currentIndex:
            self.ui.modelComboBox.currentIndex = modelIndex
        deviceIndex = self.ui.deviceComboBox.findData(self._parameterNode.device)
        if deviceIndex >= 0 and deviceIndex != self.ui.deviceComboBox.currentIndex:
            self.ui.deviceComboBox.currentIndex = deviceIndex
        running = self._job is not None
        hasInput = self._parameterNode.inputVolume is not None
        self.ui.segmentButton.enabled = hasInput and not running
        self.ui.segmentButton.toolTip = _("Find and outline lymph nodes") if hasInput else _("Select an input CT volume first")
        hasSegmentation = self._parameterNode.outputSegmentation is not None
        self.ui.measureButton.enabled = hasSegmentation and not running
        self.ui.compareButton.enabled = hasSegmentation and self._parameterNode.referenceSegmentation is not None and not running
        self.ui.measurementTableView.setMRMLTableNode(self._parameterNode.measurementTable)
        evaluationTable = self._parameterNode.evaluationTable
        self.ui.evaluationTableView.setMRMLTableNode(evaluationTable)
        detectionTableId = evaluationTable.GetAttribute(ATTRIBUTE_DETECTION_TABLE_ID) if evaluationTable else None
        self.ui.detectionTableView.setMRMLTableNode(slicer.mrmlScene.GetNodeByID(detectionTableId) if detectionTableId else None)

    def _setRunning(self, running: bool) -> None:
        self.ui.cancelButton.visible = running
        self.ui.progressBar.visible = running
        if running:
            self.ui.progressBar.setValue(0)
            self.ui.progressBar.setFormat(_("Starting... %p%"))
        self._updateGui()

    def _report(self, messages) -> None:
        text = "\n".join(messages)
        self.ui.statusLabel.text = text
        if text:
            slicer.util.showStatusMessage(text.splitlines()[-1], 5000)

    # ------------------------------------------------------------------ actions
    def onSegmentButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start."), waitCursor=True):
            volumeNode = self._parameterNode.inputVolume
            if volumeNode is None:
                raise ValueError(_("Select an input CT volume first."))
            if not self.logic.ensureDependencies(askConfirmation=True):
                return
            device = check_device(self._parameterNode.device)
            self._jobVolumeNode = volumeNode
            self._jobOutputNode = self._parameterNode.outputSegmentation if self.ui.overwriteCheckBox.checked else None
            self._job = self.logic.startSegmentation(volumeNode, self._parameterNode.model, device)
            self._setRunning(True)
            self._timer.start()

    def _pollJob(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        finished = job.poll()
        self.ui.progressBar.setValue(int(round(job.fraction * 100)))
        self.ui.progressBar.setFormat(f"{job.stage or _('working')}: %p%")
        if not finished:
            return
        self._timer.stop()
        self._job = None
        self._setRunning(False)
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            segmentationNode = self.logic.finishSegmentation(job, self._jobVolumeNode, self._jobOutputNode)
            self._parameterNode.outputSegmentation = segmentationNode
            self._showResults(segmentationNode)

    def _showResults(self, segmentationNode) -> None:
        volumeNode = self._parameterNode.inputVolume
        if volumeNode is not None:
            slicer.util.setSliceViewerLayers(background=volumeNode, fit=True)
        table = self.logic.measure(segmentationNode, volumeNode, tableNode=self._parameterNode.measurementTable)
        self._parameterNode.measurementTable = table
        chartId = table.GetAttribute(ATTRIBUTE_PLOT_CHART_ID)
        chart = slicer.mrmlScene.GetNodeByID(chartId) if chartId else None
        if chart is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)
        if self._parameterNode.referenceSegmentation is not None:
            self.onCompareButton()
        self._report(self.logic.messages)

    def onCancelButton(self) -> None:
        if self._job is None:
            return
        self._timer.stop()
        job, self._job = self._job, None
        job.cancel()
        self._setRunning(False)
        self._report([_("Segmentation cancelled; the scene is unchanged.")])

    def onMeasureButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Measurement failed."), waitCursor=True):
            self._showResults(self._parameterNode.outputSegmentation)

    def onCompareButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Comparison failed."), waitCursor=True):
            table = self.logic.compare(
                self._parameterNode.outputSegmentation,
                self._parameterNode.referenceSegmentation,
                tableNode=self._parameterNode.evaluationTable,
            )
            self._parameterNode.evaluationTable = table
            self._report(self.logic.messages)

    def onTableRowClicked(self, index) -> None:
        table = self._parameterNode.measurementTable
        if table is None:
            return
        center = self.logic.nodeCenterRAS(table, index.row())
        if center is None:
            return
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, *center, slicer.vtkMRMLSliceNode.CenteredJumpSlice)


#
# LymphNodeQuantLogic
#


def registerPackagedModels(modelsFolder: str) -> None:
    """Make the module's packaged models (``Resources/Models``) visible to the engine's model
    registry, here and in the engine processes started from here (``LNQ_MODEL_PATH``). Needed in an
    installed extension, where the models sit beside the module rather than in the source tree."""
    known = [p for p in os.environ.get("LNQ_MODEL_PATH", "").split(os.pathsep) if p]
    if os.path.isdir(modelsFolder) and modelsFolder not in known:
        os.environ["LNQ_MODEL_PATH"] = os.pathsep.join([*known, modelsFolder])


class LymphNodeQuantLogic(ScriptedLoadableModuleLogic):  # noqa: F405
    """Segment, measure and compare; every method blocks and can be called from the Python console::

        logic = slicer.util.getModuleLogic("LymphNodeQuant")
        seg = logic.segment(getNode("CT"), model="default", device="auto")
        table = logic.measure(seg, getNode("CT"))
        scores = logic.compare(seg, getNode("reference"))
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # noqa: F405
        self.core = LymphNodeQuantCore()
        registerPackagedModels(os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "Models"))

    def getParameterNode(self):
        return LymphNodeQuantParameterNode(super().getParameterNode())

    @property
    def messages(self) -> list:
        return self.core.messages

    def availableModels(self) -> list:
        """(name, description) of the models in the registry (packaged models first)."""
        try:
            from LymphNodeQuantLib.models.model_folder import list_models

            entries = list_models()
        except ImportError as error:  # engine packages not installed yet: they are on first Segment
            logging.info(f"Model registry unavailable until the engine's packages are installed ({error}).")
            return [("default", _("the packaged model"))]
        models = []
        for entry in sorted(entries, key=lambda e: not e.get("default", False)):  # the default model first
            if entry.get("error"):
                logging.warning(f"Model folder {entry.get('folder')} skipped: {entry['error']}")
                continue
            description = f"{entry.get('name')} {entry.get('version', '')}: {entry.get('description', '')}"
            models.append((str(entry["name"]), description))
        return models or [("default", _("the packaged model"))]

    def ensureDependencies(self, askConfirmation: bool = True) -> bool:
        """Install the engine's missing Python packages (PyTorch via the PyTorch extension)."""
        from LymphNodeQuantMRML import dependencies

        missing = dependencies.missing_requirements()
        if not missing:
            return True
        names = ", ".join(req.pip_requirement for req in missing)
        if askConfirmation and not slicer.util.confirmOkCancelDisplay(
            _("LymphNodeQuant needs these Python packages, which will be downloaded and installed now: ") + names
        ):
            return False

        def installTorch() -> bool:
            try:
                import PyTorchUtils
            except ModuleNotFoundError:
                return False
            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=askConfirmation, torchVersionRequirement=">=2.0")
            return torch is not None

        with slicer.util.WaitCursor():
            dependencies.install_missing(slicer.util.pip_install, installTorch)
        return True

    def segment(self, volumeNode, model: str = "default", device: str = "auto", outputSegmentationNode=None, progress=None, cancel=None, background: bool = False):
        """Segment lymph nodes in ``volumeNode``; returns a new ``vtkMRMLSegmentationNode``
        (or fills ``outputSegmentationNode``). ``background=True`` runs the engine in a separate process."""
        return self.core.segment(volumeNode, model, device, output_node=outputSegmentationNode, progress=progress, cancel=cancel, background=background)

    def startSegmentation(self, volumeNode, model: str = "default", device: str = "auto") -> BackgroundSegmentation:
        """Start the engine in a background process; poll the returned job, then call :meth:`finishSegmentation`."""
        return BackgroundSegmentation(checked_ct(volumeNode), model, check_device(device))

    def finishSegmentation(self, job: BackgroundSegmentation, volumeNode, outputSegmentationNode=None):
        return self.core.add_segmentation(volumeNode, job.outcome(), outputSegmentationNode)

    def measure(self, segmentationNode, volumeNode=None, tableNode=None):
        """Per-node measurements (units in the column properties) in a ``vtkMRMLTableNode``."""
        return self.core.measure(segmentationNode, volumeNode, table_node=tableNode)

    def compare(self, segmentationNode, referenceSegmentationNode, tableNode=None):
        """Dice, ASSD, HD95 and per-node detection against a reference, in a ``vtkMRMLTableNode``."""
        return self.core.compare(segmentationNode, referenceSegmentationNode, table_node=tableNode)

    def nodeCenterRAS(self, tableNode, row: int):
        return self.core.node_center_ras(tableNode, row)


#
# LymphNodeQuantTest
#


class LymphNodeQuantTest(ScriptedLoadableModuleTest):  # noqa: F405
    """End-to-end on a small synthetic chest CT: segment with the packaged model, measure,
    compare, save/reload ``.seg.nrrd``, bad input and cancel. Runs in Slicer and, through
    ``Testing/slicer_harness.py``, on slicer-core's MRML in CI."""

    #: packaged model the test runs (a model folder path also works)
    model = "default"
    phantomShapeZyx = (40, 96, 96)
    phantomSpacingZyxMm = (3.0, 3.5, 3.5)
    phantomSeed = 11

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_BadInput()
        self.setUp()
        self.test_SegmentMeasureCompare()
        self.setUp()
        self.test_CancelLeavesSceneUnchanged()

    # -------------------------------------------------------------- helpers
    def _phantomNodes(self):
        from LymphNodeQuantLib.synthetic import make_phantom
        from LymphNodeQuantMRML.segmentations import add_segmentation_node
        from LymphNodeQuantMRML.volumes import add_volume_node

        phantom = make_phantom(self.phantomShapeZyx, self.phantomSpacingZyxMm, seed=self.phantomSeed)
        ctNode = add_volume_node(slicer.mrmlScene, phantom.ct, "PhantomCT")
        referenceNode = add_segmentation_node(slicer.mrmlScene, phantom.node_labels, "PhantomReference", reference_volume_node=ctNode)
        return phantom, ctNode, referenceNode

    # -------------------------------------------------------------- tests
    def test_BadInput(self):
        from LymphNodeQuantLib.errors import InputError
        from LymphNodeQuantLib.geometry import Volume
        from LymphNodeQuantLib.synthetic import make_phantom
        from LymphNodeQuantMRML.volumes import add_volume_node

        logic = LymphNodeQuantLogic()
        with self.assertRaisesRegex(InputError, "No input CT volume selected"):
            logic.segment(None, model=self.model)
        phantom = make_phantom((24, 48, 48), (3.0, 7.0, 7.0), seed=1)
        labelNode = add_volume_node(slicer.mrmlScene, phantom.node_labels, "labels", labelmap=True)
        with self.assertRaisesRegex(InputError, "not a CT image"):
            logic.segment(labelNode, model=self.model)
        notCtNode = add_volume_node(slicer.mrmlScene, Volume(phantom.ct.array.astype("float32") / 5000.0 + 0.5, phantom.ct.geometry), "photo")
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            logic.segment(notCtNode, model=self.model)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        with self.assertRaisesRegex(InputError, "Unknown device"):
            logic.segment(add_volume_node(slicer.mrmlScene, phantom.ct, "ct"), model=self.model, device="tpu")

    def test_SegmentMeasureCompare(self):
        import tempfile

        import numpy as np

        from LymphNodeQuantLib.evaluate import evaluate_case
        from LymphNodeQuantMRML import segmentations, tables, terminology
        from LymphNodeQuantMRML.core import model_card_of
        from LymphNodeQuantMRML.volumes import geometry_of_volume_node

        self.delayDisplay("Segmenting the phantom")
        phantom, ctNode, referenceNode = self._phantomNodes()
        logic = LymphNodeQuantLogic()
        segmentationNode = logic.segment(ctNode, model=self.model, device="cpu")

        # The segments hold exactly the engine's labels, on the CT's grid and geometry.
        engineLabels = logic.core.last_outcome.labels
        self.assertTrue(engineLabels.geometry.same_grid(phantom.ct.geometry))
        exported = segmentations.labels_from_segmentation_node(segmentationNode, ctNode)
        self.assertTrue(exported.labels.geometry.same_grid(phantom.ct.geometry))
        self.assertTrue(geometry_of_volume_node(ctNode).same_grid(phantom.ct.geometry))
        self.assertTrue(np.array_equal(exported.labels.array, engineLabels.array))
        segmentation = segmentationNode.GetSegmentation()
        labelValues = sorted(int(v) for v in np.unique(engineLabels.array) if v)
        self.assertEqual(segmentation.GetNumberOfSegments(), len(labelValues))
        self.assertGreater(len(labelValues), 0, "the packaged model found no node in the phantom")
        card = segmentations.ModelInfo.from_card(model_card_of(self.model))
        self.assertTrue(card.name)
        self.assertEqual(segmentationNode.GetAttribute(segmentations.ATTRIBUTE_MODEL_NAME), card.name)
        self.assertEqual(segmentationNode.GetAttribute(segmentations.ATTRIBUTE_MODEL_VERSION), card.version)
        for value in labelValues:
            segment = segmentation.GetSegment(segmentations.segment_id_for_label(segmentationNode, value))
            self.assertEqual(segment.GetName(), f"Lymph node {value}")
            codes = terminology.parse_terminology_entry(terminology.segment_terminology(segment))
            self.assertEqual(codes["category"].value, "85756007")
            self.assertEqual(codes["type"].value, "59441001")
            self.assertEqual(codes["region"].value, "72410000")

        self.delayDisplay("Measuring")
        table = logic.measure(segmentationNode, ctNode)
        self.assertEqual(table.GetNumberOfRows(), len(labelValues))
        self.assertEqual(table.GetColumnUnitLabel("short_axis_mm"), "mm")
        self.assertEqual(table.GetColumnUnitLabel("volume_ml"), "mL")
        names = tables.column_values(table, tables.SEGMENT_NAME_COLUMN)
        self.assertEqual(sorted(names), sorted(f"Lymph node {v}" for v in labelValues))
        center = logic.nodeCenterRAS(table, 0)
        self.assertIsNotNone(center)

        self.delayDisplay("Comparing with the phantom's reference")
        evaluationTable = logic.compare(segmentationNode, referenceNode)
        rows = {row["metric"]: row["value"] for row in tables.table_row_dicts(evaluationTable)}
        engine = evaluate_case(engineLabels, phantom.node_labels, foreground="nonzero")
        self.assertAlmostEqual(rows["dice"], engine.dice, places=6)
        self.assertAlmostEqual(rows["assd_mm"], engine.assd_mm, places=4)
        self.assertGreater(engine.dice, 0.3, "the packaged model should outline the phantom's nodes")

        self.delayDisplay("Saving and reloading .seg.nrrd")
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "nodes.seg.nrrd")
            storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            storage.SetFileName(path)
            self.assertTrue(storage.WriteData(segmentationNode))
            reloaded = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
            reader = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            reader.SetFileName(path)
            self.assertTrue(reader.ReadData(reloaded))
        again = segmentations.labels_from_segmentation_node(reloaded, ctNode)
        self.assertTrue(np.array_equal(again.labels.array, exported.labels.array))
        self.assertEqual(reloaded.GetSegmentation().GetNumberOfSegments(), len(labelValues))
        firstSegment = reloaded.GetSegmentation().GetNthSegment(0)
        modelName = vtk.reference("")
        self.assertTrue(firstSegment.GetTag(segmentations.ATTRIBUTE_MODEL_NAME, modelName))
        self.assertEqual(str(modelName), card.name)
        self.assertEqual(terminology.segment_terminology(firstSegment), terminology.segment_terminology(segmentation.GetNthSegment(0)))
        self.delayDisplay("Test passed")

    def test_CancelLeavesSceneUnchanged(self):
        from LymphNodeQuantLib.errors import CancelledError
        from LymphNodeQuantLib.progress import CancelToken
        from LymphNodeQuantMRML.transaction import node_ids

        phantom, ctNode, referenceNode = self._phantomNodes()
        logic = LymphNodeQuantLogic()
        logic.getParameterNode()
        before = node_ids(slicer.mrmlScene)
        token = CancelToken()
        fractions = []

        def progress(fraction, stage):
            fractions.append(fraction)
            if fraction > 0.0:
                token.cancel()

        with self.assertRaises(CancelledError):
            logic.segment(ctNode, model=self.model, device="cpu", progress=progress, cancel=token)
        self.assertEqual(node_ids(slicer.mrmlScene), before)
        self.assertTrue(fractions, "the engine reported no progress before the cancel")
