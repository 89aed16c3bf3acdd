"""Which engine packages are missing inside Slicer, and how they are installed without harm.

* **Pins.** :data:`PIP_REQUIREMENTS` are the engine's packages with the versions of its
  ``pyproject.toml``, for the Python of every supported Slicer (3.12; see
  :mod:`.compatibility`). ``Testing/test_module_dependencies_resolve.py`` resolves them with pip
  for each supported Slicer, under that Slicer's own numpy/scipy/SimpleITK, so a pin that cannot
  install there fails CI.
* **PyTorch** comes only from the PyTorch extension (``PyTorchUtils``, which picks the CUDA build
  for the GPU). :data:`TORCH` is the oldest torch the pins accept (MONAI 1.6.1 needs
  ``torch>=2.8.0``); an older installed torch is upgraded through the extension, never by pip.
* **Never replaced:** 3D Slicer's numpy, scipy, SimpleITK and vtk and the extension's torch and
  torchvision (:data:`PROTECTED`). They are pinned to the installed versions in a constraints
  file, and the install runs ``pip_install_guarded.py``, which resolves first and installs nothing
  if the resolution would touch any of them.
* **One dialog, then a background process.** :class:`InstallPlan` says what will be installed and
  about how much is downloaded; :class:`PipInstallJob` runs pip in its own process (progress and
  cancel like a segmentation run), so Slicer's GUI thread never waits on pip.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from LymphNodeQuantLib.errors import CancelledError, LNQError

from . import runner


class DependencyError(LNQError):
    """An engine dependency is missing and could not be installed."""


@dataclass(frozen=True)
class Requirement:
    import_name: str
    distribution: str
    specifier: str = ""
    #: approximate download of this package and the dependencies only it pulls in (MB, Python 3.12 wheels)
    download_mb: float = 0.0

    @property
    def pip_requirement(self) -> str:
        return f"{self.distribution}{self.specifier}"


#: installed with pip when missing: the engine's pins (pyproject.toml), valid on Python 3.12
#: (Slicer 5.10 and later) and on the engine's own Python 3.10-3.12
PIP_REQUIREMENTS: tuple[Requirement, ...] = (
    # Slicer ships scipy (5.10: 1.13.1, 5.12: 1.17.1); it is pinned to that version and only
    # installed into a Slicer built without it.
    Requirement("scipy", "scipy", "", 35.0),
    Requirement("cc3d", "connected-components-3d", "==4.1.1", 4.9),
    Requirement("safetensors", "safetensors", "==0.8.0", 0.5),
    Requirement("tqdm", "tqdm", "==4.70.1", 0.1),
    Requirement("monai", "monai", "==1.6.1", 1.7),
    # nnU-Net's network definitions; they require timm (and through it huggingface_hub) and einops
    Requirement("dynamic_network_architectures", "dynamic-network-architectures", "==0.4.4", 0.1),
    Requirement("timm", "timm", "==1.0.22", 8.1),
    Requirement("einops", "einops", "==0.8.2", 0.1),
)
#: the oldest PyTorch the pins accept (monai 1.6.1: torch>=2.8.0); asked of the PyTorch extension
TORCH = Requirement("torch", "torch", ">=2.8")
TORCH_MINIMUM = (2, 8)
#: installed with torch by the PyTorch extension (timm needs it)
TORCHVISION = Requirement("torchvision", "torchvision")
#: provided by 3D Slicer itself: pinned, never installed or replaced
SLICER_PROVIDED: tuple[str, ...] = ("numpy", "scipy", "SimpleITK", "vtk")
#: provided by the PyTorch extension: pinned, never installed or replaced by pip
PYTORCH_EXTENSION_PROVIDED: tuple[str, ...] = ("torch", "torchvision")
PROTECTED: tuple[str, ...] = SLICER_PROVIDED + PYTORCH_EXTENSION_PROVIDED
#: shown in the dialog: a CPU build of torch is about 0.2 GB; CUDA builds with their libraries up to 3 GB
TORCH_DOWNLOAD_TEXT = "about 0.2 GB (CPU build) to 3 GB (CUDA build)"
GUARDED_PIP_SCRIPT = Path(__file__).resolve().parent / "pip_install_guarded.py"


def is_importable(import_name: str) -> bool:
    try:
        return importlib.util.find_spec(import_name) is not None
    except (ImportError, ValueError):
        return False


def installed_version(distribution: str) -> Optional[str]:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split("+")[0].split("."):
        digits = "".join(character for character in part if character.isdigit())
        if not digits:
            break
        parts.append(int(digits))
        if digits != part:
            break
    return tuple(parts)


def missing_requirements(importable: Callable[[str], bool] = is_importable) -> list[Requirement]:
    """Engine packages (torch included) that cannot be imported in this Python."""
    return [req for req in (TORCH, *PIP_REQUIREMENTS) if not importable(req.import_name)]


@dataclass
class InstallPlan:
    """What has to be installed before the engine can run here."""

    #: "" (PyTorch is fine), "install" or "upgrade" (through the PyTorch extension)
    torch_action: str = ""
    torch_installed: str = ""
    #: torch is already imported in this process: an upgrade only takes effect after a restart
    torch_imported: bool = False
    pip: tuple[Requirement, ...] = ()
    messages: list[str] = field(default_factory=list)

    @property
    def needed(self) -> bool:
        return bool(self.torch_action or self.pip)

    @property
    def download_mb(self) -> float:
        return sum(req.download_mb for req in self.pip)

    @property
    def restart_needed(self) -> bool:
        return self.torch_action == "upgrade" and self.torch_imported

    def dialog_text(self) -> str:
        """The one confirmation shown before anything is downloaded."""
        lines = ["LymphNodeQuant needs these Python packages in Slicer's Python before it can segment:", ""]
        if self.torch_action == "install":
            lines.append(f"- PyTorch {TORCH.specifier} and torchvision, through the PyTorch extension ({TORCH_DOWNLOAD_TEXT})")
        elif self.torch_action == "upgrade":
            lines.append(
                f"- PyTorch {self.torch_installed} is too old: it is upgraded to {TORCH.specifier} through the PyTorch extension "
                f"({TORCH_DOWNLOAD_TEXT})" + ("; Slicer must then be restarted" if self.restart_needed else "")
            )
        if self.pip:
            names = ", ".join(req.pip_requirement for req in self.pip)
            lines.append(f"- {names} and their dependencies, with pip (about {self.download_mb:.0f} MB)")
        lines += [
            "",
            "3D Slicer's own numpy, scipy, SimpleITK and vtk are never replaced. The download runs in the background; "
            "the progress bar shows it and Cancel stops it.",
        ]
        return "\n".join(lines)

    def details(self) -> str:
        """Longer text for the dialog's details: every pin and what stays untouched."""
        lines = [f"{req.pip_requirement}  (about {req.download_mb:g} MB)" for req in self.pip]
        if self.torch_action:
            lines.append(f"torch{TORCH.specifier}, torchvision  (PyTorch extension: PyTorchUtils.installTorch)")
        protected = ", ".join(f"{name} {installed_version(name) or '(not installed)'}" for name in PROTECTED)
        lines.append(f"Kept as installed: {protected}")
        return "\n".join(lines)


def plan_installation(
    importable: Callable[[str], bool] = is_importable,
    version_of: Callable[[str], Optional[str]] = installed_version,
) -> InstallPlan:
    """What is missing here: PyTorch (absent or older than :data:`TORCH`) and the pip packages."""
    plan = InstallPlan()
    torch_version = version_of("torch") if importable("torch") else None
    if torch_version is None:
        plan.torch_action = "install"
    elif _version_tuple(torch_version) < TORCH_MINIMUM:
        plan.torch_action, plan.torch_installed = "upgrade", torch_version
        plan.torch_imported = "torch" in sys.modules
    elif not importable(TORCHVISION.import_name):
        plan.torch_action, plan.torch_installed = "install", torch_version  # the extension adds the matching torchvision
    plan.pip = tuple(req for req in PIP_REQUIREMENTS if not importable(req.import_name))
    return plan


def constraints_text(
    protected: Sequence[str] = PROTECTED,
    version_of: Callable[[str], Optional[str]] = installed_version,
    importable: Callable[[str], bool] = is_importable,
) -> str:
    """pip constraints: each protected distribution pinned to its installed version.

    A protected package that is importable but has no pip metadata (Slicer's own vtk is built with
    Slicer) gets an unsatisfiable constraint, so pip fails rather than install a second copy.
    """
    import_names = {
        "SimpleITK": "SimpleITK",
        "numpy": "numpy",
        "scipy": "scipy",
        "vtk": "vtk",
        "torch": "torch",
        "torchvision": "torchvision",
    }
    lines = []
    for distribution in protected:
        version = version_of(distribution)
        if version:
            lines.append(f"{distribution}=={version}")
        elif importable(import_names.get(distribution, distribution)):
            lines.append(f"{distribution}<0  # provided without pip metadata: never install it")
    return "\n".join(lines) + "\n"


def protected_distributions(
    version_of: Callable[[str], Optional[str]] = installed_version,
    importable: Callable[[str], bool] = is_importable,
) -> list[str]:
    """What pip must not install or replace: the PyTorch extension's packages always (pip would
    fetch a build that does not match the GPU), Slicer's packages when present (a Slicer built
    without scipy may get it from pip)."""
    return [name for name in PROTECTED if name in PYTORCH_EXTENSION_PROVIDED or version_of(name) or importable(name)]


class PipInstallJob(runner.BackgroundJob):
    """``pip_install_guarded.py`` in a background process: poll it from a timer, or :meth:`wait`.

    The constraints file lives in a private temporary folder removed when the run ends.
    """

    def __init__(
        self,
        requirements: Sequence[str],
        *,
        python_executable: Optional[str] = None,
        protected: Optional[Sequence[str]] = None,
        constraints: Optional[str] = None,
        pip_options: Sequence[str] = (),
        dry_run_only: bool = False,
    ) -> None:
        if not requirements:
            raise ValueError("PipInstallJob needs at least one requirement.")
        self.requirements = [str(req) for req in requirements]
        self._folder = Path(tempfile.mkdtemp(prefix="LymphNodeQuant-pip-"))
        try:
            constraints_path = self._folder / "constraints.txt"
            constraints_path.write_text(constraints_text() if constraints is None else constraints, encoding="utf-8")
            command = [
                python_executable or runner.default_python_executable(),
                str(GUARDED_PIP_SCRIPT),
                "--constraints",
                str(constraints_path),
            ]
            command += [f"--protect={name}" for name in (protected_distributions() if protected is None else protected)]
            command += [f"--pip-option={option}" for option in pip_options]
            if dry_run_only:
                command.append("--dry-run-only")
            command += ["--", *self.requirements]
            env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8")
            self.process = runner.EngineProcess(command, env=env, cwd=str(self._folder))
            self.process.start()
        except BaseException:
            self.cleanup()
            raise

    def outcome(self) -> dict:
        """``{"installed": [...], "would_install": [...]}`` of a finished run; :class:`DependencyError` otherwise."""
        try:
            return self.process.outcome()
        except runner.EngineProcessError as error:
            raise DependencyError(
                f"Could not install {', '.join(self.requirements)} into Slicer's Python: {error}\n"
                "Nothing of 3D Slicer's own packages was changed. Check the network connection and the Python console log."
            ) from error
        finally:
            self.cleanup()

    def wait(self, progress=None, cancel=None) -> dict:
        try:
            self.process.wait(progress, cancel)
        except CancelledError:
            self.cleanup()
            raise
        except runner.EngineProcessError:
            pass  # outcome() raises it as a DependencyError with what to do
        return self.outcome()

    def cleanup(self) -> None:
        shutil.rmtree(self._folder, ignore_errors=True)


def install_torch(plan: InstallPlan, install_torch_callback: Optional[Callable[[str], bool]]) -> None:
    """Install or upgrade PyTorch through the PyTorch extension (``install_torch_callback(specifier)``)."""
    if not plan.torch_action:
        return
    if install_torch_callback is None:
        raise DependencyError(
            f"PyTorch {TORCH.specifier} is needed. Install the 'PyTorch' extension from the Extensions Manager, restart "
            "Slicer, then click Segment again (LymphNodeQuant then installs PyTorch through it)."
        )
    if not install_torch_callback(TORCH.specifier):
        raise DependencyError(f"The PyTorch extension did not install PyTorch {TORCH.specifier}; see the Python console log.")
    if plan.restart_needed:
        raise DependencyError(
            f"PyTorch was upgraded from {plan.torch_installed}; restart Slicer to use the new version, then click Segment again."
        )
    importlib.invalidate_caches()


def verify_installed(plan: InstallPlan, importable: Callable[[str], bool] = is_importable) -> None:
    importlib.invalidate_caches()
    still_missing = [req.pip_requirement for req in plan.pip if not importable(req.import_name)]
    if plan.torch_action and not importable("torch"):
        still_missing.insert(0, f"torch{TORCH.specifier}")
    if still_missing:
        raise DependencyError(f"Installed but still not importable: {', '.join(still_missing)}. Restart Slicer and try again.")


def install(
    plan: InstallPlan,
    install_torch_callback: Optional[Callable[[str], bool]] = None,
    *,
    python_executable: Optional[str] = None,
    progress=None,
    cancel=None,
    importable: Callable[[str], bool] = is_importable,
) -> list[str]:
    """Carry out ``plan`` (blocking): PyTorch through the extension, then the pip packages in a
    background process. Returns the distributions pip installed."""
    install_torch(plan, install_torch_callback)
    installed: list[str] = []
    if plan.pip:
        job = PipInstallJob([req.pip_requirement for req in plan.pip], python_executable=python_executable)
        installed = list(job.wait(progress, cancel).get("installed", []))
    verify_installed(plan, importable)
    return installed
