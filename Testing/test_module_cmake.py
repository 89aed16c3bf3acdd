"""The extension's CMake files list every module, engine and resource file (configured against
a stand-in for Slicer's CMake macros, ``Testing/fake_slicer_cmake``)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.fixture(scope="module")
def configured(repo_root, tmp_path_factory):
    cmake = shutil.which("cmake")
    compiler = any(shutil.which(name) for name in ("c++", "g++", "clang++"))
    if cmake is None or not compiler:
        reason = "cmake not installed (pip install -e '.[test]' installs it)" if cmake is None else "no C++ compiler: CMake's project() needs one"
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the CMake test, not skip it")
        pytest.skip(reason)
    build = tmp_path_factory.mktemp("cmake-build")
    result = subprocess.run(
        [cmake, "-S", str(repo_root), "-B", str(build), f"-DSlicer_DIR={repo_root / 'Testing' / 'fake_slicer_cmake'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = (build / "slicer-macros.txt").read_text().splitlines()
    entries: dict[str, set[str]] = {}
    for line in lines:
        kind, _, value = line.partition(" ")
        entries.setdefault(kind, set()).add(value)
    return entries


def test_module_scripts_and_resources_are_all_listed(configured, repo_root):
    module_dir = repo_root / "LymphNodeQuant"
    assert configured["module"] == {"LymphNodeQuant"}
    python_files = {p.relative_to(module_dir).as_posix() for p in module_dir.rglob("*.py") if "__pycache__" not in p.parts}
    assert python_files <= configured["script"], f"not in CMakeLists.txt: {sorted(python_files - configured['script'])}"
    assert {"Resources/UI/LymphNodeQuant.ui", "Resources/Icons/LymphNodeQuant.png"} <= configured["resource"]
    models = {p.relative_to(module_dir).as_posix() for p in (module_dir / "Resources" / "Models").rglob("*") if p.is_file() and not p.name.startswith(".")}
    assert models <= configured["resource"], f"model files not installed: {sorted(models - configured['resource'])}"


def test_engine_package_is_installed_beside_the_module(configured, repo_root):
    engine_files = {p.relative_to(repo_root).as_posix() for p in (repo_root / "LymphNodeQuantLib").rglob("*.py") if "__pycache__" not in p.parts}
    assert engine_files == configured["engine"]
    assert configured["python_target"] == {"LymphNodeQuantLib -> lib/Slicer-5.13/qt-scripted-modules"}


def test_self_test_is_registered_with_ctest(configured):
    assert configured["unittest"] == {"LymphNodeQuant.py"}
