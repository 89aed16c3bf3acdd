"""The Slicer side of ``lnq models install``: the model list and installs in a background process.

:func:`model_choices` gives the model selector its entries: installed models (usable now) and
published models that can be installed (with download size and licence). :class:`BackgroundModelInstall`
runs ``lnq models install ... --progress json`` in its own process group, exactly as a segmentation
runs (:mod:`.runner`), so the GUI stays responsive, shows byte progress, and Cancel kills the
download; the engine resumes it next time and never leaves a half-installed model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from . import runner


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model selector."""

    name: str  # what --model takes (installed) or what to install (publisher:name)
    label: str
    description: str
    installed: bool
    size_bytes: int = 0
    licence: str = ""
    recommended_use: str = ""


def model_choices() -> list[ModelChoice]:
    """Installed models (the default first), then installable published models not installed yet."""
    from LymphNodeQuantLib.model_install import published_models
    from LymphNodeQuantLib.models.model_folder import list_models

    installed = [m for m in list_models() if not m.get("error")]
    installed.sort(key=lambda m: not m.get("default", False))
    choices = [
        ModelChoice(
            str(m["name"]),
            str(m["name"]),
            f"{m['name']} {m.get('version', '')}: {m.get('description', '')}",
            True,
            licence=str(m.get("licence", "")),
        )
        for m in installed
    ]
    names = {m["name"] for m in installed}
    for model in published_models():
        if model.name in names:
            continue
        size = model.size_bytes()
        label = f"{model.name} (install: {size / 1e9:.1f} GB, {model.licence})"
        choices.append(
            ModelChoice(
                model.key,
                label,
                f"{model.display_name or model.key} {model.version}: {model.recommended_use}",
                False,
                size,
                model.licence,
                model.recommended_use,
            )
        )
    return choices


def installed_name(source: str) -> str:
    """The name a published model gets once installed (``publisher:name`` -> ``name``)."""
    return source.split(":", 1)[1] if ":" in source else source


class BackgroundModelInstall(runner.BackgroundJob):
    """``lnq models install SOURCE`` in a background process; poll from a timer, :meth:`cancel` kills it."""

    def __init__(
        self,
        source: str,
        *,
        folds: Optional[Sequence[int]] = None,
        accept_licence: bool = False,
        overwrite: bool = False,
        python_executable: Optional[str] = None,
    ) -> None:
        self.source = source
        command = runner.install_model_command(
            python_executable or runner.default_python_executable(),
            source,
            folds=folds,
            accept_licence=accept_licence,
            overwrite=overwrite,
        )
        self.process = runner.EngineProcess(command, env=runner.engine_environment())
        self.process.start()

    def outcome(self) -> str:
        """The installed model's name (raises the engine's error, e.g. a failed checksum)."""
        self.process.outcome()
        return str(self.process.result.data.get("name") or installed_name(self.source))
