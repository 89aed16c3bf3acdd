"""Qt-free half of the LymphNodeQuant Slicer module.

Everything here runs on a bare ``vtkMRMLScene`` (the ``slicer-core`` wheel in CI, or inside
Slicer) and never imports ``qt``, ``ctk`` or ``slicer.app``:

* :mod:`.volumes`: volume node <-> :class:`~LymphNodeQuantLib.geometry.Volume` (RAS <-> LPS).
* :mod:`.segmentations`: label volume <-> ``vtkMRMLSegmentationNode`` (terminology, colours,
  model metadata; label values keep their identity through a name-matched colour table).
* :mod:`.tables`, :mod:`.plots`: measurement / evaluation table nodes and a plot chart node.
* :mod:`.transaction`: leaves the scene exactly as before when a job fails or is cancelled.
* :mod:`.runner`: runs ``lnq segment --progress json`` in its own process group, parses its
  progress lines without blocking and kills the whole process tree on cancel.
* :mod:`.core`: the blocking ``segment`` / ``measure`` / ``compare`` used by the module's Logic.
* :mod:`.followup`: a follow-up comparison (``lnq followup --progress json`` in the background)
  put into the scene as new nodes that keep the baseline node numbers; :mod:`.followup_views`:
  baseline and follow-up side by side, a table row click centring each view on its node.
* :mod:`.dependencies`: which engine packages are missing inside Slicer, the one confirmation
  text, and the background install (:mod:`.pip_install_guarded`, which never replaces Slicer's
  numpy, scipy, SimpleITK or vtk, nor the PyTorch extension's torch).
* :mod:`.compatibility`: the supported Slicer versions (5.10 and later); importable on Python 3.9
  and without the engine, so an older Slicer can say why the module cannot run.

The numerics live in ``LymphNodeQuantLib``; this package only converts and calls it.
"""
