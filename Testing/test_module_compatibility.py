"""Supported Slicer versions and module loading.

* Slicer 5.10 and later are supported; an older Slicer (5.8: Python 3.9, where the engine and its
  pins cannot run) still loads the module file, which then says so instead of failing an import or
  a pip run.
* The module imports both from the built extension (engine beside the module file) and from the
  source tree (``LymphNodeQuant/`` added to Slicer's additional module paths; engine one level up).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import slicer_harness
from slicer_harness import MODULE_DIR, REPO_ROOT

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LymphNodeQuantMRML import compatibility  # noqa: E402

pytestmark = pytest.mark.mrml


@pytest.mark.parametrize(
    ("slicer", "python", "supported"),
    [((5, 8), (3, 9), False), ((5, 6), (3, 9), False), ((5, 10), (3, 12), True), ((5, 12), (3, 12), True), ((5, 13), (3, 12), True),
     (None, (3, 9), False), (None, (3, 11), True)],
)  # fmt: skip
def test_supported_versions(slicer, python, supported):
    reason = compatibility.unsupported_reason(slicer, python)
    assert (reason == "") == supported
    if not supported:
        assert "5.10 or later" in reason and "download.slicer.org" in reason
    if slicer == (5, 8):
        assert "3D Slicer 5.8 with Python 3.9" in reason


def test_every_supported_slicer_is_at_least_the_minimum_and_runs_a_python_the_engine_accepts():
    for release, python in compatibility.SUPPORTED_SLICER_PYTHON.items():
        assert tuple(int(part) for part in release.split(".")) >= compatibility.MINIMUM_SLICER
        assert compatibility.unsupported_reason(tuple(int(p) for p in release.split(".")), python) == ""
    assert "5.10" in compatibility.SUPPORTED_SLICER_PYTHON and "5.12" in compatibility.SUPPORTED_SLICER_PYTHON


def test_readme_and_extension_metadata_state_the_supported_versions():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme.split("## The Slicer module", 1)[1].split("\n## ", 1)[0]
    assert compatibility.SUPPORTED_VERSIONS_TEXT in section
    cmake = (REPO_ROOT / "CMakeLists.txt").read_text()
    assert compatibility.SUPPORTED_VERSIONS_TEXT in cmake  # EXTENSION_DESCRIPTION
    assert 'VERSION_LESS "5.10"' in cmake


@pytest.mark.parametrize("path", ["LymphNodeQuant.py", "LymphNodeQuantMRML/compatibility.py", "LymphNodeQuantMRML/__init__.py"])
def test_files_an_old_slicer_imports_first_parse_as_python_3_9(path):
    """Slicer 5.8 runs Python 3.9: these must parse there so the module can say it is unsupported."""
    ast.parse((MODULE_DIR / path).read_text(), feature_version=(3, 9))


_OLD_SLICER_IMPORT = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])

    class EngineNotImportable:
        '''On Python 3.9 the engine (LymphNodeQuantLib, Python >= 3.10) cannot be imported at all.'''
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "LymphNodeQuantLib":
                raise SyntaxError("the engine needs Python 3.10")
            return None

    sys.meta_path.insert(0, EngineNotImportable())
    import slicer_harness
    slicer_harness.make_scene()
    with slicer_harness.slicer_application(5, 8):
        module = slicer_harness.load_module()
        parent = slicer_harness.ModuleParent(module.__file__)
        module.LymphNodeQuant(parent)
        try:
            module.LymphNodeQuantLogic()
            refused = ""
        except Exception as error:
            refused = f"{type(error).__name__}: {error}"
    print(json.dumps({"reason": module.UNSUPPORTED_REASON, "refused": refused, "help": parent.helpText,
                      "engine_imported": any(n.startswith("LymphNodeQuantLib") for n in sys.modules)}))
    """
)


def test_an_old_slicer_loads_the_module_and_is_refused_with_a_clear_message():
    result = subprocess.run(
        [sys.executable, "-c", _OLD_SLICER_IMPORT, str(REPO_ROOT / "Testing")], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "needs 3D Slicer 5.10 or later" in report["reason"] and "this is 3D Slicer 5.8" in report["reason"]
    assert report["refused"].startswith("UnsupportedSlicerError: LymphNodeQuant needs 3D Slicer 5.10")
    assert report["reason"] in report["help"]
    assert report["engine_imported"] is False


def test_a_supported_slicer_application_is_not_refused(mrml_scene):
    module = slicer_harness.load_module()
    with slicer_harness.slicer_application(5, 10):
        assert compatibility.unsupported_reason(compatibility.slicer_version(), (3, 12)) == ""
        compatibility.check_supported()
    assert module.UNSUPPORTED_REASON == ""


# ---------------------------------------------------------------------------- where the module loads from
_LOAD_FROM = textwrap.dedent(
    """
    import json, os, sys
    # Only what Slicer puts on sys.path: the module's own folder (no editable install of the engine).
    sys.meta_path[:] = [finder for finder in sys.meta_path if "editable" not in repr(finder).lower()]
    sys.path_importer_cache.clear()
    module_dir, testing_dir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, testing_dir)
    import slicer_harness
    slicer_harness.make_scene()
    module = slicer_harness.load_module(module_dir)
    import LymphNodeQuantLib, LymphNodeQuantMRML
    from LymphNodeQuantMRML import runner
    logic = module.LymphNodeQuantLogic()
    # the background engine process finds the same engine
    child = runner.EngineProcess([sys.executable, "-c",
        "import json, LymphNodeQuantLib; print(json.dumps({'event': 'done', 'outputs': {'file': LymphNodeQuantLib.__file__}}))"],
        env=runner.engine_environment(), cwd=module_dir).wait()
    print(json.dumps({"engine": LymphNodeQuantLib.__file__, "bridge": LymphNodeQuantMRML.__file__, "child_engine": child["file"],
                      "models": [name for name, _ in logic.availableModels()], "model_path": os.environ.get("LNQ_MODEL_PATH", "")}))
    """
)


def _copy_module(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(MODULE_DIR, destination, ignore=ignore)


@pytest.mark.parametrize("layout", ["source tree", "built extension"])
def test_module_imports_from_the_source_tree_and_from_the_built_extension(layout, tmp_path):
    if layout == "source tree":  # <repo>/LymphNodeQuant/LymphNodeQuant.py, <repo>/LymphNodeQuantLib/
        module_dir = tmp_path / "checkout" / "LymphNodeQuant"
        engine_parent = tmp_path / "checkout"
    else:  # <Slicer>/lib/Slicer-5.x/qt-scripted-modules/{LymphNodeQuant.py, LymphNodeQuantMRML/, LymphNodeQuantLib/}
        module_dir = engine_parent = tmp_path / "lib" / "qt-scripted-modules"
    _copy_module(module_dir)
    shutil.copytree(
        REPO_ROOT / "LymphNodeQuantLib", engine_parent / "LymphNodeQuantLib", ignore=shutil.ignore_patterns("__pycache__")
    )
    result = subprocess.run(
        [sys.executable, "-c", _LOAD_FROM, str(module_dir), str(REPO_ROOT / "Testing")],
        capture_output=True, text=True, timeout=300, cwd=str(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["engine"]).parent == engine_parent / "LymphNodeQuantLib"
    assert Path(report["child_engine"]).parent == engine_parent / "LymphNodeQuantLib"
    assert Path(report["bridge"]).parent == module_dir / "LymphNodeQuantMRML"
    assert str(module_dir / "Resources" / "Models") in report["model_path"].split(":")
    assert report["models"][0] == "lnq-chest-unet"


def test_engine_search_path_prefers_the_engine_beside_the_module(tmp_path):
    module = slicer_harness.load_module()
    (tmp_path / "a" / "LymphNodeQuantLib").mkdir(parents=True)
    (tmp_path / "a" / "LymphNodeQuantLib" / "__init__.py").write_text("")
    assert module.engineSearchPath(str(tmp_path / "a")) == str(tmp_path / "a")
    (tmp_path / "a" / "LymphNodeQuant").mkdir()
    assert module.engineSearchPath(str(tmp_path / "a" / "LymphNodeQuant")) == str(tmp_path / "a")
    assert module.engineSearchPath(str(tmp_path / "elsewhere")) is None
