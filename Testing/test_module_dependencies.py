"""Installing the engine's Python packages inside Slicer: what is installed, and what never is."""

from __future__ import annotations

import importlib.metadata
import re
import shlex
import sys
from pathlib import Path

import pytest

from slicer_harness import MODULE_DIR

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LymphNodeQuantMRML import dependencies  # noqa: E402


def test_nothing_is_missing_in_the_test_environment():
    assert dependencies.missing_requirements() == []


def test_slicer_packages_are_pinned_never_installed():
    names = {req.distribution.lower() for req in dependencies.PIP_REQUIREMENTS}
    assert not names & {"numpy", "simpleitk", "vtk", "torch", "slicer"}
    text = dependencies.constraints_text()
    assert f"numpy=={importlib.metadata.version('numpy')}" in text
    assert f"SimpleITK=={importlib.metadata.version('SimpleITK')}" in text
    assert f"torch=={importlib.metadata.version('torch')}" in text


def test_missing_packages_are_installed_with_constraints_and_torch_through_its_installer():
    installed: set[str] = set()
    pip_calls: list[str] = []
    torch_calls: list[bool] = []

    def importable(name: str) -> bool:
        return name in installed or name in {"scipy", "tqdm", "safetensors", "cc3d"}

    def pip_install(arguments: str) -> None:
        pip_calls.append(arguments)
        words = shlex.split(arguments)
        constraints = Path(words[words.index("-c") + 1])
        assert "numpy==" in constraints.read_text()  # the pins exist while pip runs
        for word in words:
            name = re.split("[=<>]", word)[0]
            installed.add({"dynamic-network-architectures": "dynamic_network_architectures"}.get(name, name))

    def install_torch() -> bool:
        torch_calls.append(True)
        installed.add("torch")
        return True

    done = dependencies.install_missing(pip_install, install_torch, importable)
    assert torch_calls == [True]
    assert done == ["monai==1.6.1", "dynamic-network-architectures==0.4.4"]
    assert len(pip_calls) == 1 and "torch" not in pip_calls[0].split("-c")[0]
    assert dependencies.install_missing(pip_install, install_torch, importable) == []  # now complete


def test_missing_torch_without_the_pytorch_extension_says_what_to_do():
    with pytest.raises(dependencies.DependencyError, match="PyTorch.*Extensions Manager"):
        dependencies.install_missing(lambda arguments: None, None, lambda name: name != "torch")


def test_a_failing_pip_gives_a_clear_message():
    def pip_install(arguments: str) -> None:
        raise RuntimeError("network unreachable")

    with pytest.raises(dependencies.DependencyError, match="Could not install monai==1.6.1.*network unreachable"):
        dependencies.install_missing(pip_install, None, lambda name: name != "monai")
