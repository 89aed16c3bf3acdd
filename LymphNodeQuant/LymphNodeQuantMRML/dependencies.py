"""Which engine packages are missing inside Slicer, and how to install them safely.

Slicer ships its own numpy, SimpleITK and vtk: those are never installed or upgraded (a
constraints file pins them to the versions already there). PyTorch is installed only through the
PyTorch extension's installer (``PyTorchUtils``), which picks the build matching the GPU/CUDA.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from LymphNodeQuantLib.errors import LNQError


class DependencyError(LNQError):
    """An engine dependency is missing and could not be installed."""


@dataclass(frozen=True)
class Requirement:
    import_name: str
    distribution: str
    specifier: str = ""

    @property
    def pip_requirement(self) -> str:
        return f"{self.distribution}{self.specifier}"


#: installed with pip when missing (same pins as the engine's pyproject.toml where compatible)
PIP_REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("scipy", "scipy"),
    Requirement("cc3d", "connected-components-3d", "==4.1.1"),
    Requirement("safetensors", "safetensors", "==0.8.0"),
    Requirement("tqdm", "tqdm", "==4.70.1"),
    Requirement("monai", "monai", "==1.6.1"),
    Requirement("dynamic_network_architectures", "dynamic-network-architectures", "==0.4.4"),
)
#: provided by Slicer itself: pinned, never replaced
SLICER_PROVIDED: tuple[str, ...] = ("numpy", "SimpleITK", "vtk")
TORCH = Requirement("torch", "torch", ">=2.0")


def is_importable(import_name: str) -> bool:
    return importlib.util.find_spec(import_name) is not None


def missing_requirements(importable: Callable[[str], bool] = is_importable) -> list[Requirement]:
    """Engine packages (torch included) that cannot be imported in this Python."""
    return [req for req in (TORCH, *PIP_REQUIREMENTS) if not importable(req.import_name)]


def constraints_text(distributions: Sequence[str] = (*SLICER_PROVIDED, "torch")) -> str:
    """pip constraints pinning the given distributions to their installed versions."""
    lines = []
    for distribution in distributions:
        try:
            lines.append(f"{distribution}=={importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(lines) + "\n"


def install_missing(
    pip_install: Callable[[str], None],
    install_torch: Optional[Callable[[], bool]] = None,
    importable: Callable[[str], bool] = is_importable,
) -> list[str]:
    """Install what is missing; returns the pip requirements installed.

    ``pip_install`` is ``slicer.util.pip_install`` inside Slicer (it takes one argument string);
    ``install_torch`` installs PyTorch through the PyTorch extension and returns True on success.
    Raises :class:`DependencyError` with what to do when anything fails.
    """
    missing = missing_requirements(importable)
    if any(req is TORCH for req in missing):
        if install_torch is None or not install_torch():
            raise DependencyError(
                "PyTorch is not installed. Install the 'PyTorch' extension from the Extensions Manager, restart "
                "Slicer, then open its module and click 'Install PyTorch' (or let LymphNodeQuant install it when asked)."
            )
    to_pip = [req for req in missing if req is not TORCH]
    if not to_pip:
        return []
    constraints = Path(tempfile.mkdtemp(prefix="LymphNodeQuant-pip-")) / "constraints.txt"
    constraints.write_text(constraints_text(), encoding="utf-8")
    requirements = " ".join(f'"{req.pip_requirement}"' for req in to_pip)
    try:
        pip_install(f'{requirements} -c "{constraints}"')
    except Exception as error:  # pip's own message says which package failed
        raise DependencyError(
            f"Could not install {', '.join(r.pip_requirement for r in to_pip)} into Slicer's Python ({error}). "
            "Check the network connection and the Python console log, or install them from the console with "
            f"slicer.util.pip_install('{' '.join(r.pip_requirement for r in to_pip)}')."
        ) from error
    finally:
        constraints.unlink(missing_ok=True)
        constraints.parent.rmdir()
    importlib.invalidate_caches()
    still_missing = [req.pip_requirement for req in to_pip if not importable(req.import_name)]
    if still_missing:
        raise DependencyError(f"Installed but still not importable: {', '.join(still_missing)}. Restart Slicer and try again.")
    return [req.pip_requirement for req in to_pip]
