"""The extension's CMake files, configured against a stand-in for Slicer's CMake macros
(``Testing/fake_slicer_cmake``, which parses arguments and checks files as Slicer's own macros do):
every module, engine and resource file is listed, the self-test is registered, and a Slicer older
than the supported 5.10 is refused at configure time."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def _cmake():
    cmake = shutil.which("cmake")
    compiler = any(shutil.which(name) for name in ("c++", "g++", "clang++"))
    if cmake is None or not compiler:
        reason = (
            "cmake not installed (pip install -e '.[test]' installs it)"
            if cmake is None
            else "no C++ compiler: CMake's project() needs one"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}: CI must run the CMake test, not skip it")
        pytest.skip(reason)
    return cmake


def _configure(repo_root, build, *definitions):
    return subprocess.run(
        [_cmake(), "-S", str(repo_root), "-B", str(build), f"-DSlicer_DIR={repo_root / 'Testing' / 'fake_slicer_cmake'}", *definitions],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def configured(repo_root, tmp_path_factory):
    build = tmp_path_factory.mktemp("cmake-build")
    result = _configure(repo_root, build)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entries: dict[str, set[str]] = {}
    for line in (build / "slicer-macros.txt").read_text().splitlines():
        kind, _, value = line.partition(" ")
        entries.setdefault(kind, set()).add(value)
    return entries


def test_module_scripts_and_resources_are_all_listed(configured, repo_root):
    module_dir = repo_root / "LymphNodeQuant"
    assert configured["module"] == {"LymphNodeQuant"}
    python_files = {p.relative_to(module_dir).as_posix() for p in module_dir.rglob("*.py") if "__pycache__" not in p.parts}
    assert python_files <= configured["script"], f"not in CMakeLists.txt: {sorted(python_files - configured['script'])}"
    assert {"Resources/UI/LymphNodeQuant.ui", "Resources/Icons/LymphNodeQuant.png"} <= configured["resource"]
    models = {
        p.relative_to(module_dir).as_posix()
        for p in (module_dir / "Resources" / "Models").rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }
    assert models <= configured["resource"], f"model files not installed: {sorted(models - configured['resource'])}"
    # slicerMacroBuildScriptedModule hands every script to ctkMacroCompilePythonScript
    assert {f"LymphNodeQuant {name}" for name in python_files} <= configured["python_script"]


def test_engine_package_is_installed_beside_the_module(configured, repo_root):
    engine_files = {
        p.relative_to(repo_root).as_posix()
        for p in (repo_root / "LymphNodeQuantLib").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    assert {f"LymphNodeQuantLib {name}" for name in engine_files} <= configured["python_script"]
    listed_engine = {value.split(" ", 1)[1] for value in configured["python_script"] if value.startswith("LymphNodeQuantLib ")}
    assert listed_engine == engine_files
    # the engine's data files too (pyproject.toml's package data), e.g. the published-models registry
    data_files = {
        p.relative_to(repo_root).as_posix()
        for p in (repo_root / "LymphNodeQuantLib").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    assert "LymphNodeQuantLib/model_install/published_models.json" in data_files
    listed_data = {value for value in configured.get("python_resource", set()) if value.startswith("LymphNodeQuantLib ")}
    assert listed_data == {f"LymphNodeQuantLib {name}" for name in data_files}
    # module and engine go to the same qt-scripted-modules folder: `import LymphNodeQuantLib` works beside the module
    assert configured["python_target"] == {
        "LymphNodeQuant -> lib/Slicer-5.10/qt-scripted-modules",
        "LymphNodeQuantLib -> lib/Slicer-5.10/qt-scripted-modules",
    }


def test_self_test_is_registered_with_ctest(configured):
    assert configured["unittest"] == {"py_LymphNodeQuant runUnitTest(LymphNodeQuant) args="}
    assert configured["generic_tests"] == {"LymphNodeQuant"}


def test_a_slicer_older_than_5_10_is_refused_at_configure_time(repo_root, tmp_path):
    result = _configure(repo_root, tmp_path / "old", "-DFAKE_SLICER_VERSION=5.8.1")
    assert result.returncode != 0
    assert "LymphNodeQuant needs 3D Slicer 5.10 or later (Python 3.12); this Slicer is 5.8.1." in " ".join(result.stderr.split())
    newer = _configure(repo_root, tmp_path / "new", "-DFAKE_SLICER_VERSION=5.12.3")
    assert newer.returncode == 0, newer.stderr[-3000:]
    assert "slicer_version 5.12.3" in (tmp_path / "new" / "slicer-macros.txt").read_text()
