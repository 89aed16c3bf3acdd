"""Tests of the test harness (not of the module): ``Testing/fake_slicer_cmake`` parses the macros'
arguments as Slicer's and CTK's macros do (multi-value arguments are lists, unknown keywords are
refused) and fails configuration where a real build would fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap

import pytest


def _configure(repo_root, tmp_path, body: str, *definitions):
    cmake = shutil.which("cmake")
    if cmake is None or not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        if os.environ.get("CI"):
            pytest.fail("cmake and a C++ compiler are needed in CI")
        pytest.skip("cmake or a C++ compiler is missing")
    source = tmp_path / "src"
    (source / "Mod" / "Sub").mkdir(parents=True, exist_ok=True)
    for name in ("Mod/Mod.py", "Mod/Sub/helper.py", "Mod/icon.png"):
        (source / name).write_text("")
    (source / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.16)\nproject(Probe)\nfind_package(Slicer REQUIRED)\ninclude(${Slicer_USE_FILE})\n"
        "add_subdirectory(Mod)\n"
    )
    (source / "Mod" / "CMakeLists.txt").write_text(textwrap.dedent(body))
    build = tmp_path / "build"
    result = subprocess.run(
        [cmake, "-S", str(source), "-B", str(build), f"-DSlicer_DIR={repo_root / 'Testing' / 'fake_slicer_cmake'}", *definitions],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    record = (build / "slicer-macros.txt").read_text() if (build / "slicer-macros.txt").is_file() else ""
    return result.returncode, " ".join(result.stderr.split()), record


def test_valid_calls_record_every_value_of_multi_value_arguments(repo_root, tmp_path):
    code, errors, record = _configure(repo_root, tmp_path, """
        slicerMacroBuildScriptedModule(NAME Mod SCRIPTS Mod.py Sub/helper RESOURCES icon.png WITH_GENERIC_TESTS)
        slicer_add_python_unittest(SCRIPT Mod.py SLICER_ARGS --no-main-window --disable-cli-modules TESTNAME_PREFIX nomainwindow_)
    """)  # fmt: skip
    assert code == 0, errors
    assert "script Sub/helper" in record  # listed without .py, found as Sub/helper.py (as Slicer allows)
    assert "python_script Mod Sub/helper.py" in record and "python_resource Mod icon.png" in record
    assert "unittest py_nomainwindow_Mod runUnitTest(Mod) args=--no-main-window;--disable-cli-modules" in record
    assert "slicer_version 5.10.0" in record


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("slicerMacroBuildScriptedModule(Stray NAME Mod SCRIPTS Mod.py)", 'Unknown keywords given to slicerMacroBuildScriptedModule(): "Stray"'),
        # an unknown keyword after SCRIPTS is one more script, as in Slicer: it does not exist
        ("slicerMacroBuildScriptedModule(NAME Mod SCRIPTS Mod.py EXTRA_THING)", "given nonexistent file or directory 'EXTRA_THING'"),
        ("slicerMacroBuildScriptedModule(SCRIPTS Mod.py)", "NAME is mandatory"),
        ("slicerMacroBuildScriptedModule(NAME Mod SCRIPTS Mod.py Missing.py)", "given nonexistent file or directory 'Missing.py'"),
        ("ctkMacroCompilePythonScript(TARGET_NAME A B SCRIPTS Mod.py DESTINATION_DIR d INSTALL_DIR i)", "TARGET_NAME takes one value, got 2"),
        ("ctkMacroCompilePythonScript(TARGET_NAME A SCRIPTS Mod.py DESTINATION_DIR d)", "INSTALL_DIR is mandatory"),
        ("ctkMacroCompilePythonScript(TARGET_NAME A SCRIPTS Gone.py DESTINATION_DIR d INSTALL_DIR i)", "no such script"),
        ("slicer_add_python_unittest(SCRIPT Gone.py)", "no script"),
    ],
)  # fmt: skip
def test_calls_slicer_would_reject_fail_configuration(repo_root, tmp_path, body, message):
    code, errors, _ = _configure(repo_root, tmp_path, body)
    assert code != 0 and message in errors, errors


def test_the_fake_slicer_version_is_what_find_package_reports(repo_root, tmp_path):
    code, errors, record = _configure(repo_root, tmp_path, "", "-DFAKE_SLICER_VERSION=5.12.3")
    assert code == 0, errors
    assert "slicer_version 5.12.3" in record
