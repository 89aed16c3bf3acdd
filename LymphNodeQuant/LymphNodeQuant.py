"""LymphNodeQuant: find, outline and measure mediastinal lymph nodes on chest CT in 3D Slicer.

Module layout (Slicer ExtensionWizard template):

* ``LymphNodeQuant``: module metadata.
* ``LymphNodeQuantParameterNode``: the GUI state, saved with the scene.
* ``LymphNodeQuantWidget``: the GUI. Segmentation runs in a background engine process
  (``lnq segment --progress json``) polled by a timer, so Slicer stays responsive; Cancel kills the
  whole process tree and leaves the scene unchanged.
* ``LymphNodeQuantLogic``: ``segment`` / ``measure`` / ``compare`` / ``followup``, blocking and usable
  from the Python console (the GUI runs segmentation and follow-up in background processes). The
  MRML conversions live in the Qt-free ``LymphNodeQuantMRML`` package and
  the numerics in the ``LymphNodeQuantLib`` engine.
* ``LymphNodeQuantTest``: end-to-end self-test on a synthetic chest CT phantom.
"""

import logging
import os
import sys
import unittest
from typing import Annotated, Optional

import ctk  # noqa: F401  (the UI file uses ctk widgets)
import qt
import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode, vtkMRMLTableNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import *  # noqa: F403
from slicer.util import VTKObservationMixin


def engineSearchPath(moduleDir: str) -> Optional[str]:
    """The folder holding the ``LymphNodeQuantLib`` engine that belongs to this module file.

    Installed extension: the engine sits beside the module file (``qt-scripted-modules``). Source
    tree (``LymphNodeQuant/`` added to Slicer's additional module paths, which puts only that
    folder on ``sys.path``): the engine is one level up, at the repository root.
    """
    for folder in (moduleDir, os.path.dirname(moduleDir)):
        if os.path.isfile(os.path.join(folder, "LymphNodeQuantLib", "__init__.py")):
            return folder
    return None


def _makeEngineImportable() -> None:
    folder = engineSearchPath(os.path.dirname(os.path.abspath(__file__)))
    if folder is not None and folder not in sys.path:
        sys.path.append(folder)


_makeEngineImportable()

# Checked before anything from the engine is imported: on an unsupported Slicer (5.8: Python 3.9)
# the module still loads and says why it cannot run.
from LymphNodeQuantMRML import compatibility  # noqa: E402
from LymphNodeQuantMRML.compatibility import DEVICES  # noqa: E402

UNSUPPORTED_REASON = compatibility.unsupported_reason(compatibility.slicer_version(slicer), tuple(sys.version_info[:2]))
if UNSUPPORTED_REASON:
    logging.error(UNSUPPORTED_REASON)
else:
    from LymphNodeQuantMRML.core import (  # noqa: E402
        ATTRIBUTE_DETECTION_TABLE_ID,
        ATTRIBUTE_PLOT_CHART_ID,
        BackgroundSegmentation,
        LymphNodeQuantCore,
        check_device,
        checked_ct,
    )
    from LymphNodeQuantMRML.followup import CRITERIA, BackgroundFollowup  # noqa: E402


def checkSupported() -> None:
    """Raise :class:`~LymphNodeQuantMRML.compatibility.UnsupportedSlicerError` on an unsupported Slicer."""
    if UNSUPPORTED_REASON:
        raise compatibility.UnsupportedSlicerError(UNSUPPORTED_REASON)


def tableRowFromViewIndex(tableView, index) -> int:
    """The MRML table row of a clicked ``qMRMLTableView`` index (-1 for none).

    The view shows its table node through a ``QSortFilterProxyModel`` over a ``qMRMLTableModel``:
    the clicked index is mapped to the source model, and the model says which table row it shows
    (its row 0 holds the column names unless the table uses column titles as header).
    """
    proxy = tableView.sortFilterProxyModel()
    sourceIndex = proxy.mapToSource(index) if proxy is not None else index
    if not sourceIndex.isValid():
        return -1
    return tableView.tableModel().mrmlTableRowIndex(sourceIndex)


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
            "table row to centre the views on that node. <b>Follow-up</b>: pick a baseline and a follow-up CT "
            "(and their segmentations, if you have them), click <b>Compare examinations</b>: matched, new and "
            "disappeared nodes with their change, the RECIST 1.1 or Lugano 2014 response, a waterfall chart, "
            "and both CTs side by side; the follow-up segments keep the baseline numbers. "
            '<a href="https://github.com/LymphNodeQuant/SlicerLymphNodeQuant#readme">Documentation</a>.'
        )
        self.parent.acknowledgementText = _(
            "Evaluation follows the LNQ2023 MICCAI challenge (mediastinal lymph node quantification). "
            "Module structure from the 3D Slicer ExtensionWizard template."
        )
        if UNSUPPORTED_REASON:
            self.parent.helpText = f"<p><b>{UNSUPPORTED_REASON}</b></p>" + self.parent.helpText


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
    baselineVolume / followupVolume - the two CTs of a follow-up comparison.
    baselineSegmentation / followupSegmentation - their segmentations (empty = segment with the model).
    criteria - "recist" (RECIST 1.1) or "lugano" (Lugano 2014).
    followupTable - the comparison table of the last follow-up.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = "default"
    device: Annotated[str, Choice(list(DEVICES))] = "auto"
    outputSegmentation: vtkMRMLSegmentationNode
    referenceSegmentation: vtkMRMLSegmentationNode
    measurementTable: vtkMRMLTableNode
    evaluationTable: vtkMRMLTableNode
    baselineVolume: vtkMRMLScalarVolumeNode
    followupVolume: vtkMRMLScalarVolumeNode
    baselineSegmentation: vtkMRMLSegmentationNode
    followupSegmentation: vtkMRMLSegmentationNode
    criteria: Annotated[str, Choice(["recist", "lugano"])] = "recist"
    followupTable: vtkMRMLTableNode


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
        self._installPlan = None
        self._resume = None  # the button handler to run again once an installation has finished
        self._jobHolder = None  # the section whose holder shows the shared progress bar, Cancel and status
        self._followupNodes = ()  # (baseline CT, follow-up CT, baseline segmentation, follow-up segmentation) of the job

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)  # noqa: F405
        if UNSUPPORTED_REASON:
            label = qt.QLabel(UNSUPPORTED_REASON)
            label.wordWrap = True
            self.layout.addWidget(label)
            self.layout.addStretch(1)
            return

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
        self.ui.criteriaComboBox.clear()
        for name, label in CRITERIA.items():
            self.ui.criteriaComboBox.addItem(label, name)

        self.ui.modelComboBox.connect("currentIndexChanged(int)", self._onModelChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self._onDeviceChanged)
        self.ui.segmentButton.connect("clicked(bool)", self.onSegmentButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.compareButton.connect("clicked(bool)", self.onCompareButton)
        self.ui.measureButton.connect("clicked(bool)", self.onMeasureButton)
        self.ui.measurementTableView.connect("clicked(QModelIndex)", self.onTableRowClicked)
        self.ui.installModelButton.connect("clicked(bool)", self.onInstallModelButton)
        self.ui.criteriaComboBox.connect("currentIndexChanged(int)", self._onCriteriaChanged)
        self.ui.followupCompareButton.connect("clicked(bool)", self.onFollowupButton)
        self.ui.followupTableView.connect("clicked(QModelIndex)", self.onFollowupRowClicked)

        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        if UNSUPPORTED_REASON:
            return
        if self._job is not None:
            self._job.cancel()
            self._job = None
        self.removeObservers()

    def enter(self) -> None:
        if not UNSUPPORTED_REASON:
            self.initializeParameterNode()

    def exit(self) -> None:
        if not UNSUPPORTED_REASON and self._parameterNode:
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
    def _populateModels(self, select: Optional[str] = None) -> None:
        """Installed models, then installable published ones (each with size and licence)."""
        self._modelChoices = {choice.name: choice for choice in self.logic.modelChoices()}
        self.ui.modelComboBox.blockSignals(True)
        self.ui.modelComboBox.clear()
        for choice in self._modelChoices.values():
            self.ui.modelComboBox.addItem(choice.label, choice.name)
            self.ui.modelComboBox.setItemData(self.ui.modelComboBox.count - 1, choice.description, qt.Qt.ToolTipRole)
        self.ui.modelComboBox.blockSignals(False)
        if select is not None:
            index = self.ui.modelComboBox.findData(select)
            if index >= 0:
                self.ui.modelComboBox.setCurrentIndex(index)
                self._onModelChanged(index)

    def _onModelChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.model = self.ui.modelComboBox.itemData(index)

    def _onDeviceChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.device = self.ui.deviceComboBox.itemData(index)

    def _onCriteriaChanged(self, index) -> None:
        if self._parameterNode and index >= 0:
            self._parameterNode.criteria = self.ui.criteriaComboBox.itemData(index)

    def _updateGui(self, caller=None, event=None) -> None:
        if not self._parameterNode:
            return
        modelIndex = self.ui.modelComboBox.findData(self._parameterNode.model)
        if modelIndex >= 0 and modelIndex != self.ui.modelComboBox.currentIndex:
            self.ui.modelComboBox.currentIndex = modelIndex
        deviceIndex = self.ui.deviceComboBox.findData(self._parameterNode.device)
        if deviceIndex >= 0 and deviceIndex != self.ui.deviceComboBox.currentIndex:
            self.ui.deviceComboBox.currentIndex = deviceIndex
        criteriaIndex = self.ui.criteriaComboBox.findData(self._parameterNode.criteria)
        if criteriaIndex >= 0 and criteriaIndex != self.ui.criteriaComboBox.currentIndex:
            self.ui.criteriaComboBox.currentIndex = criteriaIndex
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
        hasBothCts = self._parameterNode.baselineVolume is not None and self._parameterNode.followupVolume is not None
        self.ui.followupCompareButton.enabled = hasBothCts and not running
        self.ui.followupCompareButton.toolTip = (
            _("Match the nodes of the two examinations and assess the response")
            if hasBothCts
            else _("Select the baseline CT and the follow-up CT first")
        )
        self.ui.followupTableView.setMRMLTableNode(self._parameterNode.followupTable)
        self.ui.followupResponseLabel.text = self.logic.followupResponseText(self._parameterNode.followupTable)

    def _setRunning(self, running: bool) -> None:
        if running:  # the shared progress bar, Cancel and status go to the section that started the job
            (self._jobHolder or self.ui.segmentJobHolder).layout().addWidget(self.ui.jobWidget)
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
        with slicer.util.tryWithErrorDisplay(_("Segmentation could not start.")):
            volumeNode = self._parameterNode.inputVolume
            if volumeNode is None:
                raise ValueError(_("Select an input CT volume first."))
            self._jobHolder, self._resume = self.ui.segmentJobHolder, self.onSegmentButton
            if self._engineReady(modelNeeded=True):
                self._startSegmentation()

    def _engineReady(self, modelNeeded: bool) -> bool:
        """True when the engine can run now; otherwise offer what is missing (the model, the Python packages)
        and run ``self._resume`` again once it is installed."""
        choice = getattr(self, "_modelChoices", {}).get(self._parameterNode.model)
        if modelNeeded and choice is not None and not choice.installed:
            self._offerModelInstall(choice)
            return False
        plan = self.logic.dependencyPlan()
        if plan.needed:
            # One dialog says everything that will be installed; the pip part then runs in the
            # background and the job starts when it has finished.
            if self.logic.confirmInstallation(plan):
                self._startInstallation(plan)
            return False
        return True

    def onFollowupButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("The follow-up comparison could not start.")):
            p = self._parameterNode
            if p.baselineVolume is None or p.followupVolume is None:
                raise ValueError(_("Select the baseline CT and the follow-up CT first."))
            self._jobHolder, self._resume = self.ui.followupJobHolder, self.onFollowupButton
            if self._engineReady(modelNeeded=p.baselineSegmentation is None or p.followupSegmentation is None):
                self._startFollowup()

    def _startFollowup(self) -> None:
        p = self._parameterNode
        self._followupNodes = (p.baselineVolume, p.followupVolume, p.baselineSegmentation, p.followupSegmentation)
        self._job = self.logic.startFollowup(*self._followupNodes, criteria=p.criteria, model=p.model, device=p.device)
        self._setRunning(True)
        self._timer.start()

    def _startSegmentation(self) -> None:
        volumeNode = self._parameterNode.inputVolume
        if volumeNode is None:
            raise ValueError(_("Select an input CT volume first."))
        device = check_device(self._parameterNode.device)
        self._jobVolumeNode = volumeNode
        self._jobOutputNode = self._parameterNode.outputSegmentation if self.ui.overwriteCheckBox.checked else None
        self._job = self.logic.startSegmentation(volumeNode, self._parameterNode.model, device)
        self._setRunning(True)
        self._timer.start()

    def _offerModelInstall(self, choice) -> None:
        """One dialog: what will be downloaded, how big, under which licence; then install in the background."""
        text = _(
            "Install {label}?\n\n{description}\n\nDownload: {size:.1f} GB. Licence: {licence}.\n"
            "Installing means accepting this licence. The download runs in the background, resumes if "
            "interrupted, and is checked before it is used."
        ).format(label=choice.name, description=choice.description, size=choice.size_bytes / 1e9, licence=choice.licence)
        if not slicer.util.confirmOkCancelDisplay(text, windowTitle=_("Install model")):
            return
        self._startModelInstall(choice.name, acceptLicence=True, segmentAfterwards=True)

    def onInstallModelButton(self) -> None:
        path = qt.QFileDialog.getOpenFileName(
            slicer.util.mainWindow(),
            _("Install model from file"),
            "",
            _("Model zip or card (*.zip model.json plans.json);;All files (*)"),
        )
        if not path:
            return
        source = os.path.dirname(path) if os.path.basename(path) in ("model.json", "plans.json") else path
        with slicer.util.tryWithErrorDisplay(_("The model could not be installed.")):
            self._jobHolder = self.ui.segmentJobHolder
            self._startModelInstall(source, acceptLicence=False, segmentAfterwards=False)

    def _startModelInstall(self, source: str, acceptLicence: bool, segmentAfterwards: bool) -> None:
        self._segmentAfterInstall = segmentAfterwards
        self._job = self.logic.startModelInstall(source, acceptLicence=acceptLicence)
        self._setRunning(True)
        self._timer.start()

    def _finishModelInstall(self, job) -> None:
        with slicer.util.tryWithErrorDisplay(_("The model could not be installed.")):
            name = job.outcome()
            self._populateModels(select=name)
            self._report([_("Model {name} installed.").format(name=name)])
            if self._segmentAfterInstall and self._resume is not None:
                self._resume()  # segment or compare; the engine's own packages may still need installing first

    def _startInstallation(self, plan) -> None:
        from LymphNodeQuantMRML import dependencies

        self._installPlan = plan
        self._setRunning(True)
        if plan.torch_action:
            # PyTorch only through the PyTorch extension's installer (its own pip run, blocking).
            self.ui.progressBar.setFormat(_("Installing PyTorch through the PyTorch extension..."))
            slicer.app.processEvents()
            try:
                dependencies.install_torch(plan, self.logic.installTorchThroughExtension)
            except Exception:
                self._setRunning(False)
                raise
        if not plan.pip:
            self._setRunning(False)
            dependencies.verify_installed(plan)
            self._resume()
            return
        self._job = dependencies.PipInstallJob([req.pip_requirement for req in plan.pip])
        self._updateGui()  # Segment stays disabled while pip runs
        self._timer.start()

    def _pollJob(self) -> None:
        from LymphNodeQuantMRML import dependencies

        job = self._job
        if job is None:
            self._timer.stop()
            return
        from LymphNodeQuantMRML import model_installs

        finished = job.poll()
        if isinstance(job, model_installs.BackgroundModelInstall):
            self.ui.progressBar.setValue(int(round(job.fraction * 100)))
            self.ui.progressBar.setFormat(_("Installing model") + f" ({job.stage or _('starting')}): %p%")
            if finished:
                self._timer.stop()
                self._job = None
                self._setRunning(False)
                self._finishModelInstall(job)
            return
        installing = isinstance(job, dependencies.PipInstallJob)
        self.ui.progressBar.setValue(int(round(job.fraction * 100)))
        stage = job.stage or _("working")
        self.ui.progressBar.setFormat((_("Installing Python packages") + f" ({stage}): %p%") if installing else f"{stage}: %p%")
        if not finished:
            return
        self._timer.stop()
        self._job = None
        self._setRunning(False)
        if installing:
            with slicer.util.tryWithErrorDisplay(_("The Python packages could not be installed.")):
                job.outcome()
                dependencies.verify_installed(self._installPlan)
                self._report([_("Python packages installed; starting.")])
                self._resume()
            return
        if isinstance(job, BackgroundFollowup):
            with slicer.util.tryWithErrorDisplay(_("The follow-up comparison failed."), waitCursor=True):
                self._showFollowup(self.logic.finishFollowup(job, *self._followupNodes[:3]))
            return
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
        from LymphNodeQuantMRML import dependencies

        self._timer.stop()
        job, self._job = self._job, None
        job.cancel()
        self._setRunning(False)
        from LymphNodeQuantMRML import model_installs

        if isinstance(job, model_installs.BackgroundModelInstall):
            self._report([_("Model installation cancelled; nothing was installed (the download resumes next time).")])
        elif isinstance(job, dependencies.PipInstallJob):
            self._report([_("Installation cancelled; packages pip had already installed stay installed.")])
        elif isinstance(job, BackgroundFollowup):
            self._report([_("Follow-up comparison cancelled; the scene is unchanged.")])
        else:
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
        center = self.logic.nodeCenterRAS(table, tableRowFromViewIndex(self.ui.measurementTableView, index))
        if center is None:
            return
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, *center, slicer.vtkMRMLSliceNode.CenteredJumpSlice)

    def _showFollowup(self, nodes) -> None:
        """The comparison's table and response in the panel; baseline and follow-up side by side with the chart."""
        self._parameterNode.followupTable = nodes.table
        # the user's follow-up segmentation is hidden: its renumbered copy is shown in the follow-up view
        self.logic.showFollowup(nodes.table, hiddenSegmentationNode=self._followupNodes[3])
        slicer.app.applicationLogic().PropagatePlotChartSelection()  # also a plot view the layout manager makes later
        layoutManager = slicer.app.layoutManager()
        for viewName in self.logic.followupViewNames():
            sliceWidget = layoutManager.sliceWidget(viewName) if layoutManager is not None else None
            if sliceWidget is not None:
                sliceWidget.fitSliceToBackground()
        self._report(self.logic.messages)

    def onFollowupRowClicked(self, index) -> None:
        table = self._parameterNode.followupTable
        if table is not None:
            self.logic.centerFollowupViews(table, tableRowFromViewIndex(self.ui.followupTableView, index))


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
    nodes = logic.followup(getNode("CT 2019"), getNode("CT 2020"), criteria="recist")  # FollowupNodes
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)  # noqa: F405
        checkSupported()
        self.core = LymphNodeQuantCore()
        registerPackagedModels(os.path.join(os.path.dirname(os.path.abspath(__file__)), "Resources", "Models"))

    def getParameterNode(self):
        return LymphNodeQuantParameterNode(super().getParameterNode())

    @property
    def messages(self) -> list:
        return self.core.messages

    def availableModels(self) -> list:
        """(name, description) of the installed models (the default first)."""
        return [(c.name, c.description) for c in self.modelChoices() if c.installed]

    def modelChoices(self) -> list:
        """Installed models, then published models that can be installed (``LymphNodeQuantMRML.model_installs.ModelChoice``)."""
        from LymphNodeQuantMRML import model_installs

        try:
            return model_installs.model_choices()
        except ImportError as error:  # engine packages not installed yet: they are on first Segment
            logging.info(f"Model registry unavailable until the engine's packages are installed ({error}).")
            return [model_installs.ModelChoice("default", "default", _("the packaged model"), True)]

    def startModelInstall(self, source: str, folds=None, acceptLicence: bool = False):
        """Install a model (published ``publisher:name``, zip or folder) in a background process."""
        from LymphNodeQuantMRML import model_installs

        return model_installs.BackgroundModelInstall(source, folds=folds, accept_licence=acceptLicence)

    def dependencyPlan(self):
        """What must be installed before the engine can run (empty plan: nothing)."""
        from LymphNodeQuantMRML import dependencies

        return dependencies.plan_installation()

    @staticmethod
    def confirmInstallation(plan) -> bool:
        """The one confirmation before anything is downloaded: what, through which installer, how big."""
        return slicer.util.confirmOkCancelDisplay(
            plan.dialog_text(), windowTitle=_("LymphNodeQuant: install Python packages"), detailedText=plan.details()
        )

    @staticmethod
    def installTorchThroughExtension(torchVersionRequirement: str) -> bool:
        """Install PyTorch with the PyTorch extension's installer (no second dialog: ours asked already)."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            return False
        torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
            askConfirmation=False, torchVersionRequirement=torchVersionRequirement
        )
        return torch is not None

    def ensureDependencies(self, askConfirmation: bool = True, progress=None) -> bool:
        """Install the engine's missing Python packages (blocking; for the Python console).

        One confirmation (``askConfirmation``) lists what is installed and about how big it is;
        PyTorch comes through the PyTorch extension, the rest from a background pip process that
        never replaces Slicer's numpy, scipy, SimpleITK or vtk. False when the user declines.
        """
        from LymphNodeQuantMRML import dependencies

        plan = self.dependencyPlan()
        if not plan.needed:
            return True
        if askConfirmation and not self.confirmInstallation(plan):
            return False
        dependencies.install(plan, self.installTorchThroughExtension, progress=progress)
        return True

    def segment(
        self,
        volumeNode,
        model: str = "default",
        device: str = "auto",
        outputSegmentationNode=None,
        progress=None,
        cancel=None,
        background: bool = False,
    ):
        """Segment lymph nodes in ``volumeNode``; returns a new ``vtkMRMLSegmentationNode``
        (or fills ``outputSegmentationNode``). ``background=True`` runs the engine in a separate process."""
        return self.core.segment(
            volumeNode, model, device, output_node=outputSegmentationNode, progress=progress, cancel=cancel, background=background
        )

    def startSegmentation(self, volumeNode, model: str = "default", device: str = "auto") -> "BackgroundSegmentation":
        """Start the engine in a background process; poll the returned job, then call :meth:`finishSegmentation`."""
        return BackgroundSegmentation(checked_ct(volumeNode), model, check_device(device))

    def finishSegmentation(self, job: "BackgroundSegmentation", volumeNode, outputSegmentationNode=None):
        return self.core.add_segmentation(volumeNode, job.outcome(), outputSegmentationNode)

    def measure(self, segmentationNode, volumeNode=None, tableNode=None):
        """Per-node measurements (units in the column properties) in a ``vtkMRMLTableNode``."""
        return self.core.measure(segmentationNode, volumeNode, table_node=tableNode)

    def compare(self, segmentationNode, referenceSegmentationNode, tableNode=None):
        """Dice, ASSD, HD95 and per-node detection against a reference, in a ``vtkMRMLTableNode``."""
        return self.core.compare(segmentationNode, referenceSegmentationNode, table_node=tableNode)

    def nodeCenterRAS(self, tableNode, row: int):
        return self.core.node_center_ras(tableNode, row)

    # ------------------------------------------------------------------ follow-up
    def startFollowup(
        self,
        baselineVolumeNode,
        followupVolumeNode,
        baselineSegmentationNode=None,
        followupSegmentationNode=None,
        criteria: str = "recist",
        model: str = "default",
        device: str = "auto",
    ) -> "BackgroundFollowup":
        """Start ``lnq followup`` in a background process; poll the returned job, then call :meth:`finishFollowup`.

        A segmentation left out is made with ``model``; the given ones are exported with their node numbers.
        """
        from LymphNodeQuantMRML import followup

        inputs = followup.followup_inputs(
            baselineVolumeNode, followupVolumeNode, baselineSegmentationNode, followupSegmentationNode
        )
        return BackgroundFollowup(inputs, criteria, model, check_device(device))

    def finishFollowup(self, job: "BackgroundFollowup", baselineVolumeNode, followupVolumeNode, baselineSegmentationNode=None):
        """Put a finished comparison into the scene (``LymphNodeQuantMRML.followup.FollowupNodes``); raises its error."""
        return self._addFollowup(job.outcome(), baselineVolumeNode, followupVolumeNode, baselineSegmentationNode)

    def followup(
        self,
        baselineVolumeNode,
        followupVolumeNode,
        baselineSegmentationNode=None,
        followupSegmentationNode=None,
        criteria: str = "recist",
        model: str = "default",
        device: str = "auto",
        progress=None,
        cancel=None,
    ):
        """Compare two examinations (blocking; the engine runs in a background process). Returns
        ``FollowupNodes``: the comparison table, waterfall chart, both segmentations (new nodes; the
        follow-up segments keep the baseline numbers) and the response text."""
        job = self.startFollowup(
            baselineVolumeNode, followupVolumeNode, baselineSegmentationNode, followupSegmentationNode, criteria, model, device
        )
        return self._addFollowup(job.wait(progress, cancel), baselineVolumeNode, followupVolumeNode, baselineSegmentationNode)

    def _addFollowup(self, outcome, baselineVolumeNode, followupVolumeNode, baselineSegmentationNode):
        from LymphNodeQuantMRML import followup

        nodes = followup.add_followup_nodes(
            self.core.scene, outcome, baselineVolumeNode, followupVolumeNode, baselineSegmentationNode
        )
        self.core.messages = list(nodes.messages)
        return nodes

    def followupCentersRAS(self, tableNode, row: int):
        """(baseline, follow-up) world RAS centre of the node in ``row`` of a comparison table."""
        from LymphNodeQuantMRML import followup

        return followup.node_centers_ras(self.core.scene, tableNode, row)

    def followupResponseText(self, tableNode) -> str:
        from LymphNodeQuantMRML import followup

        return followup.table_response_text(tableNode)

    def showFollowup(self, tableNode, hiddenSegmentationNode=None) -> None:
        """Side-by-side layout: baseline (Red view) and follow-up (Yellow view), each with its nodes, chart below."""
        from LymphNodeQuantMRML import followup_views

        followup_views.show_followup(self.core.scene, tableNode, hiddenSegmentationNode)

    @staticmethod
    def followupViewNames() -> tuple:
        from LymphNodeQuantMRML import followup_views

        return (followup_views.BASELINE_VIEW, followup_views.FOLLOWUP_VIEW)

    def centerFollowupViews(self, tableNode, row: int):
        """Centre each view on the row's node in its own CT; returns the two centres."""
        from LymphNodeQuantMRML import followup_views

        return followup_views.center_views_on_row(self.core.scene, tableNode, row)


#
# LymphNodeQuantTest
#


class LymphNodeQuantTest(ScriptedLoadableModuleTest):  # noqa: F405
    """Self-test on a small synthetic chest CT phantom.

    What needs no PyTorch runs everywhere, including the Slicer extensions build machines (CTest,
    ``slicer_add_python_unittest``), which have no PyTorch and none of the engine's pip packages:
    bad input is refused, a label map becomes named, coded segments and survives a ``.seg.nrrd``
    round trip. Measuring and comparing, and a follow-up comparison of a phantom pair with both
    segmentations given, need connected-components-3d; segmenting and cancelling need PyTorch and
    the engine's packages. A test whose packages are missing is skipped with the
    reason (``unittest`` skip under CTest; a "Skipped" message and :attr:`skipped` in
    :meth:`runTest`), and runs the full segment / measure / compare cycle where they are present.
    """

    #: packaged model the test runs (a model folder path also works)
    model = "default"
    phantomShapeZyx = (40, 96, 96)
    phantomSpacingZyxMm = (3.0, 3.5, 3.5)
    phantomSeed = 11
    #: the tests, in the order runTest runs them
    testNames = (
        "test_BadInput",
        "test_SegmentationRoundTrip",
        "test_MeasureAndCompareReference",
        "test_FollowupKnownPair",
        "test_SegmentMeasureCompare",
        "test_CancelLeavesSceneUnchanged",
    )

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        """Run every test; a test whose packages are missing is reported as skipped, not failed."""
        self.skipped = []
        for name in self.testNames:
            self.setUp()
            try:
                getattr(self, name)()
            except unittest.SkipTest as reason:
                self.skipped.append((name, str(reason)))
                self.delayDisplay(f"Skipped {name}: {reason}")
        if self.skipped:
            self.delayDisplay(
                f"Test passed; skipped {len(self.skipped)} of {len(self.testNames)}: "
                + "; ".join(f"{n} ({r})" for n, r in self.skipped)
            )
        else:
            self.delayDisplay("Test passed")

    # -------------------------------------------------------------- helpers
    def _requirePackages(self, importNames, what):
        """Skip (unittest.SkipTest) naming the missing packages unless all of ``importNames`` import."""
        from LymphNodeQuantMRML import dependencies

        missing = [name for name in importNames if not dependencies.is_importable(name)]
        if missing:
            self.skipTest(f"{what} needs {', '.join(missing)}, not installed in this Slicer (the Segment button installs them)")

    def _requireEngine(self, what):
        from LymphNodeQuantMRML import dependencies

        self._requirePackages([req.import_name for req in dependencies.missing_requirements()], what)

    def _phantomNodes(self):
        from LymphNodeQuantMRML.segmentations import add_segmentation_node
        from LymphNodeQuantMRML.volumes import add_volume_node

        from LymphNodeQuantLib.synthetic import make_phantom

        phantom = make_phantom(self.phantomShapeZyx, self.phantomSpacingZyxMm, seed=self.phantomSeed)
        ctNode = add_volume_node(slicer.mrmlScene, phantom.ct, "PhantomCT")
        referenceNode = add_segmentation_node(
            slicer.mrmlScene, phantom.node_labels, "PhantomReference", reference_volume_node=ctNode
        )
        return phantom, ctNode, referenceNode

    def _saveAndReload(self, segmentationNode):
        import tempfile

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "nodes.seg.nrrd")
            storage = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            storage.SetFileName(path)
            self.assertTrue(storage.WriteData(segmentationNode))
            reloaded = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "reloaded")
            reader = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
            reader.SetFileName(path)
            self.assertTrue(reader.ReadData(reloaded))
        return reloaded

    def _assertNodeSegments(self, segmentationNode, labelValues, modelName):
        from LymphNodeQuantMRML import segmentations, terminology

        segmentation = segmentationNode.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), len(labelValues))
        for value in labelValues:
            segment = segmentation.GetSegment(segmentations.segment_id_for_label(segmentationNode, value))
            self.assertEqual(segment.GetName(), f"Lymph node {value}")
            codes = terminology.parse_terminology_entry(terminology.segment_terminology(segment))
            self.assertEqual(codes["category"].value, "85756007")
            self.assertEqual(codes["type"].value, "59441001")
            self.assertEqual(codes["region"].value, "72410000")
            tag = vtk.reference("")
            self.assertTrue(segment.GetTag(segmentations.ATTRIBUTE_MODEL_NAME, tag))
            self.assertEqual(str(tag), modelName)

    # -------------------------------------------------------------- tests
    def test_BadInput(self):
        """Needs no PyTorch: every bad input is refused before the engine would load a model."""
        from LymphNodeQuantMRML.volumes import add_volume_node

        from LymphNodeQuantLib.errors import InputError
        from LymphNodeQuantLib.geometry import Volume
        from LymphNodeQuantLib.synthetic import make_phantom

        logic = LymphNodeQuantLogic()
        with self.assertRaisesRegex(InputError, "No input CT volume selected"):
            logic.segment(None, model=self.model)
        phantom = make_phantom((24, 48, 48), (3.0, 7.0, 7.0), seed=1)
        labelNode = add_volume_node(slicer.mrmlScene, phantom.node_labels, "labels", labelmap=True)
        with self.assertRaisesRegex(InputError, "not a CT image"):
            logic.segment(labelNode, model=self.model)
        notCtNode = add_volume_node(
            slicer.mrmlScene, Volume(phantom.ct.array.astype("float32") / 5000.0 + 0.5, phantom.ct.geometry), "photo"
        )
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        with self.assertRaises(InputError):
            logic.segment(notCtNode, model=self.model)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        with self.assertRaisesRegex(InputError, "Unknown device"):
            logic.segment(add_volume_node(slicer.mrmlScene, phantom.ct, "ct"), model=self.model, device="tpu")

    def test_SegmentationRoundTrip(self):
        """Needs no PyTorch: labels -> named, coded segments -> the same labels, also after .seg.nrrd."""
        import numpy as np
        from LymphNodeQuantMRML import segmentations, terminology
        from LymphNodeQuantMRML.volumes import geometry_of_volume_node

        self.delayDisplay("Label map to segmentation and back")
        phantom, ctNode, _referenceNode = self._phantomNodes()
        info = segmentations.ModelInfo(name="self-test", version="1", device="cpu")
        node = segmentations.add_segmentation_node(
            slicer.mrmlScene, phantom.node_labels, "nodes", model_info=info, reference_volume_node=ctNode
        )
        labelValues = sorted(int(v) for v in np.unique(phantom.node_labels.array) if v)
        self.assertGreater(len(labelValues), 0)
        self._assertNodeSegments(node, labelValues, "self-test")
        self.assertTrue(geometry_of_volume_node(ctNode).same_grid(phantom.ct.geometry))
        exported = segmentations.labels_from_segmentation_node(node, ctNode)
        self.assertTrue(np.array_equal(exported.labels.array, phantom.node_labels.array))
        self.assertTrue(exported.labels.geometry.same_grid(phantom.ct.geometry))

        self.delayDisplay("Saving and reloading .seg.nrrd")
        reloaded = self._saveAndReload(node)
        self._assertNodeSegments(reloaded, labelValues, "self-test")
        again = segmentations.labels_from_segmentation_node(reloaded, ctNode)
        self.assertTrue(np.array_equal(again.labels.array, phantom.node_labels.array))
        first = node.GetSegmentation().GetNthSegment(0)
        self.assertEqual(
            terminology.segment_terminology(reloaded.GetSegmentation().GetNthSegment(0)), terminology.segment_terminology(first)
        )

    def test_MeasureAndCompareReference(self):
        """Needs connected-components-3d, no PyTorch: the module's tables equal the engine's numbers."""
        self._requirePackages(["cc3d"], "Measuring and comparing")
        import numpy as np
        from LymphNodeQuantMRML import segmentations, tables

        from LymphNodeQuantLib.evaluate import evaluate_case
        from LymphNodeQuantLib.measure import measure_nodes

        self.delayDisplay("Measuring the reference segmentation")
        phantom, ctNode, referenceNode = self._phantomNodes()
        logic = LymphNodeQuantLogic()
        table = logic.measure(referenceNode, ctNode)
        labelValues = sorted(int(v) for v in np.unique(phantom.node_labels.array) if v)
        self.assertEqual(table.GetNumberOfRows(), len(labelValues))
        self.assertEqual(table.GetColumnUnitLabel("short_axis_mm"), "mm")
        self.assertEqual(table.GetColumnUnitLabel("volume_ml"), "mL")
        engine = {m.node_id: m for m in measure_nodes(phantom.node_labels, phantom.ct, nodes_from="labels")}
        for row in tables.table_row_dicts(table):
            self.assertAlmostEqual(row["short_axis_mm"], engine[row["node_id"]].short_axis_mm, places=4)
        # A click on the table's first data row centres the views inside that row's node.
        self.assertTrue(table.GetUseColumnTitleAsColumnHeader())
        row = tables.mrml_table_row(table, 0)
        center = np.array(logic.nodeCenterRAS(table, row))
        index = np.round(phantom.ct.geometry.lps_to_index_zyx(center * np.array([-1.0, -1.0, 1.0]))).astype(int)
        self.assertEqual(int(phantom.node_labels.array[tuple(index)]), tables.table_row_dicts(table)[row]["node_id"])

        self.delayDisplay("Comparing a partial annotation with the reference")
        partial = segmentations.add_segmentation_node(
            slicer.mrmlScene, phantom.partial_labels, "partial", reference_volume_node=ctNode
        )
        evaluationTable = logic.compare(partial, referenceNode)
        rows = {row["metric"]: row["value"] for row in tables.table_row_dicts(evaluationTable)}
        expected = evaluate_case(phantom.partial_labels, phantom.node_labels, foreground="nonzero", detection_nodes="labels")
        self.assertAlmostEqual(rows["dice"], expected.dice, places=6)
        self.assertAlmostEqual(rows["assd_mm"], expected.assd_mm, places=4)
        self.assertEqual(rows["reference_nodes"], expected.reference_nodes)

    def test_FollowupKnownPair(self):
        """Needs connected-components-3d, no PyTorch (both segmentations given): a phantom patient at two
        examinations related by a known motion; the follow-up segments keep the baseline numbers."""
        self._requirePackages(["cc3d"], "Comparing a follow-up")
        import numpy as np
        from LymphNodeQuantMRML import segmentations, tables
        from LymphNodeQuantMRML.segmentations import add_segmentation_node, labels_from_segmentation_node
        from LymphNodeQuantMRML.volumes import add_volume_node

        from LymphNodeQuantLib.followup.known_pairs import make_phantom_pair

        self.delayDisplay("Comparing a phantom pair with known node changes")
        pair = make_phantom_pair(seed=3, shape_zyx=(32, 80, 80), spacing_zyx_mm=(3.0, 4.0, 4.0), margin_slices=4)
        scene = slicer.mrmlScene
        cts = [add_volume_node(scene, pair.baseline_ct, "Baseline CT"), add_volume_node(scene, pair.followup_ct, "Follow-up CT")]
        given = [
            add_segmentation_node(scene, labels, name, reference_volume_node=ct)
            for labels, name, ct in (
                (pair.baseline_labels, "baseline nodes", cts[0]),
                (pair.followup_labels, "follow-up nodes", cts[1]),
            )
        ]
        logic = LymphNodeQuantLogic()
        nodes = logic.followup(*cts, *given, criteria="recist", device="cpu")
        self.assertEqual(nodes.baseline_segmentation.GetID(), given[0].GetID())  # it already carries the numbers
        self.assertFalse(nodes.created_baseline_segmentation)
        self.assertTrue(np.array_equal(labels_from_segmentation_node(given[1], cts[1]).labels.array, pair.followup_labels.array))
        renumbered = labels_from_segmentation_node(nodes.followup_segmentation, cts[1]).labels.array
        newNumber = int(pair.baseline_labels.array.max()) + 1
        for node in pair.nodes:  # "Lymph node N" at follow-up is baseline node N; the new node comes after them
            if node.followup_label is not None:
                number = node.baseline_label if node.baseline_label is not None else newNumber
                self.assertTrue(np.array_equal(renumbered == number, pair.followup_labels.array == node.followup_label))
                segment = segmentations.segment_id_for_label(nodes.followup_segmentation, number)
                self.assertIsNotNone(segment, f"no segment 'Lymph node {number}'")
        rows = tables.table_row_dicts(nodes.table)
        statuses = {row["node_id"]: row["status"] for row in rows}
        for node in pair.nodes:
            expected = (
                "matched" if node.baseline_label and node.followup_label else ("new" if node.followup_label else "disappeared")
            )
            self.assertEqual(statuses[node.baseline_label or newNumber], expected)
        self.assertTrue(nodes.response_text.startswith("Overall response (RECIST 1.1): "))
        for index, row in enumerate(rows):  # a row click centres each view on that node in its own CT
            baselineCenter, followupCenter = logic.followupCentersRAS(nodes.table, index)
            known = next(n for n in pair.nodes if (n.baseline_label or newNumber) == row["node_id"])
            if known.baseline_label is not None:
                self.assertLess(np.linalg.norm(np.array(baselineCenter) - known.baseline_centre_lps_mm * [-1, -1, 1]), 2.0)
            if known.followup_label is not None:
                self.assertLess(np.linalg.norm(np.array(followupCenter) - known.followup_centre_lps_mm * [-1, -1, 1]), 2.0)

    def test_SegmentMeasureCompare(self):
        """Needs PyTorch and the engine's packages: segment with the packaged model, measure, compare."""
        self._requireEngine("Segmenting with the packaged model")
        import numpy as np
        from LymphNodeQuantMRML import segmentations, tables
        from LymphNodeQuantMRML.core import model_card_of
        from LymphNodeQuantMRML.volumes import geometry_of_volume_node

        from LymphNodeQuantLib.evaluate import evaluate_case

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
        labelValues = sorted(int(v) for v in np.unique(engineLabels.array) if v)
        self.assertGreater(len(labelValues), 0, "the packaged model found no node in the phantom")
        card = segmentations.ModelInfo.from_card(model_card_of(self.model))
        self.assertTrue(card.name)
        self.assertEqual(segmentationNode.GetAttribute(segmentations.ATTRIBUTE_MODEL_NAME), card.name)
        self.assertEqual(segmentationNode.GetAttribute(segmentations.ATTRIBUTE_MODEL_VERSION), card.version)
        self._assertNodeSegments(segmentationNode, labelValues, card.name)

        self.delayDisplay("Measuring")
        table = logic.measure(segmentationNode, ctNode)
        self.assertEqual(table.GetNumberOfRows(), len(labelValues))
        self.assertEqual(table.GetColumnUnitLabel("short_axis_mm"), "mm")
        names = tables.column_values(table, tables.SEGMENT_NAME_COLUMN)
        self.assertEqual(sorted(names), sorted(f"Lymph node {v}" for v in labelValues))
        self.assertIsNotNone(logic.nodeCenterRAS(table, tables.mrml_table_row(table, 0)))

        self.delayDisplay("Comparing with the phantom's reference")
        evaluationTable = logic.compare(segmentationNode, referenceNode)
        rows = {row["metric"]: row["value"] for row in tables.table_row_dicts(evaluationTable)}
        engine = evaluate_case(engineLabels, phantom.node_labels, foreground="nonzero")
        self.assertAlmostEqual(rows["dice"], engine.dice, places=6)
        self.assertAlmostEqual(rows["assd_mm"], engine.assd_mm, places=4)
        self.assertGreater(engine.dice, 0.3, "the packaged model should outline the phantom's nodes")

        self.delayDisplay("Saving and reloading .seg.nrrd")
        reloaded = self._saveAndReload(segmentationNode)
        again = segmentations.labels_from_segmentation_node(reloaded, ctNode)
        self.assertTrue(np.array_equal(again.labels.array, exported.labels.array))
        self._assertNodeSegments(reloaded, labelValues, card.name)

    def test_CancelLeavesSceneUnchanged(self):
        """Needs PyTorch and the engine's packages: a cancel during inference leaves the scene as it was."""
        self._requireEngine("Cancelling a segmentation")
        from LymphNodeQuantMRML.transaction import node_ids

        from LymphNodeQuantLib.errors import CancelledError
        from LymphNodeQuantLib.progress import CancelToken

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
