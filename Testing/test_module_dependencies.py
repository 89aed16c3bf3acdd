"""Installing the engine's Python packages inside Slicer: one dialog, PyTorch through the PyTorch
extension, the rest by a background pip process that never replaces Slicer's own packages.

The guarded installer runs the real pip (``--dry-run`` or into a temporary ``--target``), so a
requirement pip rejects fails here as it would in Slicer.
"""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
import time

import pytest
import slicer_harness
from slicer_harness import MODULE_DIR

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LymphNodeQuantMRML import dependencies, pip_install_guarded  # noqa: E402

from LymphNodeQuantLib.errors import CancelledError  # noqa: E402

GUARD = str(dependencies.GUARDED_PIP_SCRIPT)


def _importable_except(*missing):
    return lambda name: name not in missing and dependencies.is_importable(name)


def test_nothing_is_missing_in_the_test_environment():
    assert dependencies.missing_requirements() == []
    assert not dependencies.plan_installation().needed


def test_pins_match_the_engine_and_never_name_a_protected_package():
    names = {req.distribution.lower() for req in dependencies.PIP_REQUIREMENTS}
    # scipy ships with Slicer: pinned and protected when present, installed only into a Slicer without it
    assert names & {name.lower() for name in dependencies.PROTECTED} == {"scipy"}
    assert {"numpy", "scipy", "SimpleITK", "vtk", "torch", "torchvision"} == set(dependencies.PROTECTED)
    assert dependencies.protected_distributions() == list(dependencies.PROTECTED)  # all present here
    without_scipy = dependencies.protected_distributions(lambda n: None if n in ("scipy", "torch") else "1", lambda n: False)
    assert "scipy" not in without_scipy and "torch" in without_scipy
    # the engine's own pins (pyproject.toml) are the ones installed into Slicer
    engine = {line.split("==")[0].strip().lower(): line.split("==")[1].split(";")[0].strip()
              for line in importlib.metadata.requires("LymphNodeQuantLib") if "==" in line and "extra" not in line}  # fmt: skip
    for req in dependencies.PIP_REQUIREMENTS:
        if req.specifier.startswith("==") and req.distribution.lower() in engine:
            assert req.specifier == "==" + engine[req.distribution.lower()], req
    assert dependencies.TORCH.specifier == ">=" + ".".join(map(str, dependencies.TORCH_MINIMUM))


def test_plan_names_what_is_missing_and_what_pytorch_needs():
    plan = dependencies.plan_installation(_importable_except("torch", "monai", "timm"))
    assert plan.torch_action == "install"
    assert [req.distribution for req in plan.pip] == ["monai", "timm"]
    text = plan.dialog_text()
    assert "PyTorch >=2.8" in text and "through the PyTorch extension" in text and "GB" in text
    assert "monai==1.6.1, timm==1.0.22" in text and f"about {plan.download_mb:.0f} MB" in text
    assert "never replaced" in text
    assert "numpy " + importlib.metadata.version("numpy") in plan.details()

    old = dependencies.plan_installation(
        version_of=lambda name: "2.2.1" if name == "torch" else dependencies.installed_version(name)
    )
    assert old.torch_action == "upgrade" and old.torch_installed == "2.2.1" and "too old" in old.dialog_text()
    assert old.restart_needed == ("torch" in sys.modules)
    without_vision = dependencies.plan_installation(_importable_except("torchvision"))
    assert without_vision.torch_action == "install" and not without_vision.pip


def test_constraints_pin_every_protected_package_and_block_those_without_metadata():
    text = dependencies.constraints_text()
    for name in ("numpy", "SimpleITK", "scipy", "torch", "vtk"):
        assert f"{name}=={importlib.metadata.version(name)}" in text
    # Slicer's own vtk is built with Slicer (importable, no pip metadata): pip may not install one
    blocked = dependencies.constraints_text(("vtk", "SimpleITK"), version_of=lambda name: None if name == "vtk" else "2.5.5")
    assert blocked.splitlines()[0].startswith("vtk<0") and "SimpleITK==2.5.5" in blocked
    absent = dependencies.constraints_text(("scipy",), version_of=lambda name: None, importable=lambda name: False)
    assert absent.strip() == ""  # a Slicer built without scipy: scipy may be installed


def test_torch_is_asked_of_the_pytorch_extension_once_without_a_second_dialog(mrml_scene, monkeypatch):
    module = slicer_harness.load_module()
    extension = slicer_harness.FakePyTorchUtils()
    monkeypatch.setitem(sys.modules, "PyTorchUtils", extension)
    assert module.LymphNodeQuantLogic.installTorchThroughExtension(dependencies.TORCH.specifier) is True
    assert extension.calls == [
        {
            "askConfirmation": False,
            "forceComputationBackend": None,
            "torchVersionRequirement": ">=2.8",
            "torchvisionVersionRequirement": None,
        }
    ]
    plan = dependencies.plan_installation(_importable_except("torch"))
    dependencies.install_torch(plan, module.LymphNodeQuantLogic.installTorchThroughExtension)
    assert len(extension.calls) == 2
    monkeypatch.setitem(sys.modules, "PyTorchUtils", slicer_harness.FakePyTorchUtils(succeed=False))
    with pytest.raises(dependencies.DependencyError, match="did not install PyTorch >=2.8"):
        dependencies.install_torch(plan, module.LymphNodeQuantLogic.installTorchThroughExtension)


def test_without_the_pytorch_extension_the_message_says_what_to_do(mrml_scene, monkeypatch):
    module = slicer_harness.load_module()
    monkeypatch.delitem(sys.modules, "PyTorchUtils", raising=False)
    assert module.LymphNodeQuantLogic.installTorchThroughExtension(">=2.8") is False
    with pytest.raises(dependencies.DependencyError, match="PyTorch.*Extensions Manager"):
        dependencies.install_torch(dependencies.plan_installation(_importable_except("torch")), None)


def test_console_install_asks_once_and_declining_installs_nothing(mrml_scene, monkeypatch):
    module = slicer_harness.load_module()
    logic = module.LymphNodeQuantLogic()
    plan = dependencies.plan_installation(_importable_except("monai"))
    monkeypatch.setattr(logic, "dependencyPlan", lambda: plan)
    asked = []
    monkeypatch.setattr(module.LymphNodeQuantLogic, "confirmInstallation", staticmethod(lambda p: asked.append(p) or False))
    monkeypatch.setattr(dependencies, "install", lambda *a, **k: pytest.fail("installed although the user declined"))
    assert logic.ensureDependencies(askConfirmation=True) is False
    assert asked == [plan]


def test_blocking_install_runs_the_guarded_pip_and_checks_the_result():
    # tqdm "missing": the guarded pip resolves it, finds it already satisfied and installs nothing
    plan = dependencies.plan_installation(_importable_except("tqdm"))
    assert plan.pip == tuple(req for req in dependencies.PIP_REQUIREMENTS if req.import_name == "tqdm") and not plan.torch_action
    stages = []
    assert dependencies.install(plan, None, python_executable=sys.executable, progress=lambda f, s: stages.append(s)) == []
    assert stages[0] == "resolving"
    with pytest.raises(dependencies.DependencyError, match="still not importable: tqdm==4.70.1"):
        dependencies.install(plan, None, python_executable=sys.executable, importable=_importable_except("tqdm"))


# ---------------------------------------------------------------------------- the guarded pip process
def test_guard_finds_protected_packages_in_a_pip_report():
    report = {
        "install": [{"metadata": {"name": "monai", "version": "1.6.1"}}, {"metadata": {"name": "NumPy", "version": "2.4.6"}}]
    }
    resolved = pip_install_guarded.resolved_distributions(report)
    assert pip_install_guarded.protected_conflicts(resolved, ["numpy", "SimpleITK"]) == [("NumPy", "2.4.6")]
    assert pip_install_guarded.protected_conflicts(resolved, ["simple-itk"]) == []


def test_guard_turns_pip_output_into_progress():
    lines = ["Collecting tqdm==4.70.1", "  Downloading tqdm-4.70.1-py3-none-any.whl (80 kB)", "Collecting einops==0.8.2",
             "Installing collected packages: tqdm, einops", "Successfully installed einops-0.8.2 tqdm-4.70.1"]  # fmt: skip
    collected, steps = 0, []
    for line in lines:
        step = pip_install_guarded.progress_for_line(line, collected, 2)
        if step:
            fraction, stage, collected = step
            steps.append((round(fraction, 3), stage))
    assert steps == [(0.475, "downloading tqdm"), (0.85, "downloading einops"), (0.9, "installing")]


def _guard(tmp_path, *arguments):
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(dependencies.constraints_text())
    result = subprocess.run(
        [sys.executable, GUARD, "--constraints", str(constraints), *arguments], capture_output=True, text=True, timeout=300
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, events, result.stderr


def test_guard_refuses_a_resolution_that_would_replace_a_protected_package(tmp_path):
    # resolved as if nothing were installed, tqdm would be (re)installed: protected, so refused
    code, events, log = _guard(
        tmp_path, "--protect=tqdm", "--pip-option=--ignore-installed", "--dry-run-only", "--", "tqdm==4.70.1"
    )
    assert code == 3, log[-3000:]
    assert events[-1]["event"] == "error" and events[-1]["conflicts"] == [["tqdm", "4.70.1"]]
    assert "must not be replaced; nothing was installed" in events[-1]["message"]


def test_guard_reports_an_unresolvable_requirement_with_pips_reason(tmp_path):
    # the constraints pin the installed numpy; asking for another numpy cannot be satisfied
    other = "2.2.6" if importlib.metadata.version("numpy") != "2.2.6" else "2.4.6"
    code, events, log = _guard(tmp_path, "--protect=numpy", "--dry-run-only", "--", f"numpy=={other}")
    assert code == 2, log[-3000:]
    assert (
        events[-1]["event"] == "error" and "pip could not resolve" in events[-1]["message"] and "numpy" in events[-1]["message"]
    )


def test_background_job_installs_exactly_the_resolved_packages_with_progress(tmp_path):
    target = tmp_path / "site"
    job = dependencies.PipInstallJob(["tqdm==4.70.1"], python_executable=sys.executable,
                                     pip_options=[f"--target={target}", "--ignore-installed"])  # fmt: skip
    folder = job._folder
    seen = []
    outcome = job.wait(progress=lambda fraction, stage: seen.append((fraction, stage)))
    assert outcome == {"installed": ["tqdm==4.70.1"], "would_install": ["tqdm==4.70.1"]}
    assert (target / "tqdm" / "__init__.py").is_file()
    assert [stage for _, stage in seen][:1] == ["resolving"] and seen[-1] == (1.0, "installed")
    assert "downloading tqdm" in [stage for _, stage in seen]
    assert not folder.exists()  # the constraints file is gone


def test_background_job_failure_is_a_dependency_error_and_cancel_stops_it(tmp_path):
    job = dependencies.PipInstallJob(["connected-components-3d==0.0.0.0"], python_executable=sys.executable, dry_run_only=True)
    with pytest.raises(
        dependencies.DependencyError, match="Could not install connected-components-3d==0.0.0.0.*pip could not resolve"
    ):
        job.wait()
    slow = dependencies.PipInstallJob(["tqdm==4.70.1"], python_executable=sys.executable, dry_run_only=True)
    deadline = time.monotonic() + 60
    while slow.fraction <= 0.0 and not slow.poll() and time.monotonic() < deadline:
        time.sleep(0.02)
    slow.cancel()
    with pytest.raises(CancelledError):
        slow.outcome()
    assert not slow._folder.exists()
