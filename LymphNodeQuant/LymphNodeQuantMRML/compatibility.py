"""Which 3D Slicer versions LymphNodeQuant supports, checked before anything else is imported.

Supported: **3D Slicer 5.10 and later** (5.10, 5.12 and the current preview; all run Python 3.12).
Slicer 5.8 and older run Python 3.9, where the engine's pinned packages (MONAI 1.6.1 needs
PyTorch >= 2.8; safetensors 0.8.0) do not exist and the engine itself (Python >= 3.10) cannot run,
so the module refuses them with a message instead of a failed pip run.

This file must stay importable on Slicer 5.8's Python 3.9 and imports nothing from the engine: the
module file imports it first, so an old Slicer loads the module far enough to say why it cannot run.
"""

from __future__ import annotations

import sys
from typing import Optional, Tuple

#: oldest supported 3D Slicer (major, minor)
MINIMUM_SLICER = (5, 10)
#: the Slicer releases this module is tested against, and the Python each runs
#: (Slicer's CMakeLists.txt: Slicer_REQUIRED_PYTHON_VERSION 3.12.10 in 5.10.0, 5.12.x and main)
SUPPORTED_SLICER_PYTHON = {"5.10": (3, 12), "5.12": (3, 12)}
#: the engine (LymphNodeQuantLib) needs at least this Python
MINIMUM_PYTHON = (3, 10)
#: compute devices the engine accepts
DEVICES = ("auto", "cpu", "cuda")
#: the statement shown in the README and the extension description
SUPPORTED_VERSIONS_TEXT = "3D Slicer 5.10 or later (Python 3.12)"


class UnsupportedSlicerError(RuntimeError):
    """This 3D Slicer (or its Python) is older than the module supports."""


def slicer_version(slicer_module=None) -> Optional[Tuple[int, int]]:
    """(major, minor) of the running 3D Slicer application, or None outside the application
    (PythonSlicer, tests on the slicer-core wheel)."""
    if slicer_module is None:
        import slicer as slicer_module
    app = getattr(slicer_module, "app", None)
    if app is None:
        return None
    try:
        return int(app.majorVersion), int(app.minorVersion)
    except (AttributeError, TypeError, ValueError):
        return None


def unsupported_reason(version: Optional[Tuple[int, int]], python_version: Tuple[int, ...] = tuple(sys.version_info[:2])) -> str:
    """Why this Slicer / Python cannot run the module ("" when it can)."""
    python_text = ".".join(str(part) for part in python_version[:2])
    if version is not None and tuple(version[:2]) < MINIMUM_SLICER:
        return (
            f"LymphNodeQuant needs {SUPPORTED_VERSIONS_TEXT}; this is 3D Slicer {version[0]}.{version[1]} with "
            f"Python {python_text}, where its Python packages (PyTorch 2.8 or later, MONAI 1.6) cannot be installed. "
            "Install the current 3D Slicer from https://download.slicer.org and add LymphNodeQuant there."
        )
    if tuple(python_version[:2]) < MINIMUM_PYTHON:
        minimum = ".".join(str(part) for part in MINIMUM_PYTHON)
        return (
            f"LymphNodeQuant needs Python {minimum} or later ({SUPPORTED_VERSIONS_TEXT}); this Python is "
            f"{python_text}. Install the current 3D Slicer from https://download.slicer.org."
        )
    return ""


def check_supported(version: Optional[Tuple[int, int]] = None, python_version: Optional[Tuple[int, ...]] = None) -> None:
    """Raise :class:`UnsupportedSlicerError` with what to do when this Slicer cannot run the module."""
    reason = unsupported_reason(
        slicer_version() if version is None else version,
        tuple(sys.version_info[:2]) if python_version is None else python_version,
    )
    if reason:
        raise UnsupportedSlicerError(reason)
