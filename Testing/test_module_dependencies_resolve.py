"""The module's pins resolve with pip for the Python of every supported 3D Slicer, under that
Slicer's own numpy and scipy, with the oldest PyTorch the module asks the PyTorch extension for.

``pip install --dry-run --report --only-binary=:all: --python-version X.Y`` against the package
index (Linux wheels), so a pin that cannot install in a supported Slicer fails here. PyTorch and
torchvision come from the PyTorch extension, never from this pip run: they are offered as local
stand-in wheels of the minimum version (``torch 2.8.0+stub``, no dependencies), so the test needs
no PyTorch download and checks that every resolved package accepts that torch. Slicer 5.8
(Python 3.9) is shown not to resolve, which is why the module refuses it.

Needs the package index; where it cannot be reached the test says which packages it could not
fetch (a skip locally, a failure in CI).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from slicer_harness import MODULE_DIR

if str(MODULE_DIR) not in sys.path:
    sys.path.insert(0, str(MODULE_DIR))

from LymphNodeQuantMRML import compatibility, dependencies  # noqa: E402

#: what each Slicer release ships (Slicer's SuperBuild/External_python-numpy.cmake and
#: External_python-scipy.cmake at v5.10.0 and v5.12.3; v5.8.1 for the refused release)
SLICER_RELEASES = {
    "5.10": {"python": "3.12", "constraints": {"numpy": "2.0.2", "scipy": "1.13.1"}},
    "5.12": {"python": "3.12", "constraints": {"numpy": "2.4.6", "scipy": "1.17.1", "SimpleITK": "2.5.5"}},
}
REFUSED_RELEASES = {"5.8": {"python": "3.9", "constraints": {"numpy": "1.26.4"}}}
TORCH_STUB = ".".join(map(str, dependencies.TORCH_MINIMUM)) + ".0+stub"
TORCHVISION_STUB = "0.23.0+stub"  # the torchvision release built for torch 2.8
NETWORK_TROUBLE = re.compile(r"Network is unreachable|Failed to establish a new connection|Temporary failure in name resolution|"
                             r"ProxyError|Max retries exceeded|Could not fetch URL|Read timed out|ConnectionError", re.I)  # fmt: skip


def _stub_wheel(folder: Path, name: str, version: str) -> None:
    """A dependency-free wheel standing in for a package another installer provides."""
    dist_info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist_info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: LymphNodeQuant-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            data = text.encode()
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
            wheel.writestr(path, data)
        record.append(f"{dist_info}/RECORD,,")
        wheel.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")


def _resolve(tmp_path: Path, python: str, slicer_constraints: dict[str, str]):
    stubs = tmp_path / "pytorch-extension"
    stubs.mkdir(exist_ok=True)
    _stub_wheel(stubs, "torch", TORCH_STUB)
    _stub_wheel(stubs, "torchvision", TORCHVISION_STUB)
    constraints = tmp_path / f"constraints-{python}.txt"
    pins = {**slicer_constraints, "torch": TORCH_STUB, "torchvision": TORCHVISION_STUB}
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in pins.items()))
    report = tmp_path / f"report-{python}.json"
    command = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
        "--target", str(tmp_path / "target"), "--only-binary=:all:", "--python-version", python,
        "--find-links", str(stubs), "-c", str(constraints), "--report", str(report),
        *[req.pip_requirement for req in dependencies.PIP_REQUIREMENTS],
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    return result.returncode, (json.loads(report.read_text()) if result.returncode == 0 else None), output


def _unreachable(output: str) -> list[str]:
    """Packages pip could not fetch because the index was out of reach (empty: a real resolution failure)."""
    if not NETWORK_TROUBLE.search(output):
        return []
    return re.findall(r"No matching distribution found for (\S+)", output) or ["(the package index)"]


def _fail_or_skip_unreachable(python: str, missing: list[str], output: str) -> None:
    lines = [line for line in output.splitlines() if NETWORK_TROUBLE.search(line)][:3]
    message = f"could not reach the package index for Python {python}: could not fetch {', '.join(missing)} ({' | '.join(lines)})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_every_supported_slicer_is_covered_here():
    assert set(SLICER_RELEASES) == set(compatibility.SUPPORTED_SLICER_PYTHON)
    for release, info in SLICER_RELEASES.items():
        assert info["python"] == ".".join(map(str, compatibility.SUPPORTED_SLICER_PYTHON[release]))


@pytest.mark.parametrize("release", sorted(SLICER_RELEASES))
def test_pins_resolve_for_the_python_of_each_supported_slicer(release, tmp_path):
    info = SLICER_RELEASES[release]
    code, report, output = _resolve(tmp_path, info["python"], info["constraints"])
    if code != 0:
        missing = _unreachable(output)
        if missing:
            _fail_or_skip_unreachable(info["python"], missing, output)
        pytest.fail(f"the pins do not resolve in Slicer {release} (Python {info['python']}):\n{output[-4000:]}")
    resolved = {item["metadata"]["name"].lower().replace("_", "-"): item for item in report["install"]}
    versions = {name: item["metadata"]["version"] for name, item in resolved.items()}
    for req in dependencies.PIP_REQUIREMENTS:  # every pin, at its pinned version
        name = req.distribution.lower()
        assert name in versions, f"{req.pip_requirement} was not resolved"
        if req.specifier.startswith("=="):
            assert versions[name] == req.specifier[2:], name
    # Slicer's own packages stay at Slicer's versions; PyTorch is the extension's (the stand-in)
    for name, version in info["constraints"].items():
        if name.lower() in versions:
            assert versions[name.lower()] == version, name
    assert versions["torch"] == TORCH_STUB and versions["torchvision"] == TORCHVISION_STUB
    assert "vtk" not in versions and "simpleitk" not in versions
    # the torch the module asks the PyTorch extension for satisfies every resolved package, and
    # nothing older would (MONAI 1.6.1 needs torch >= 2.8.0)
    from packaging.requirements import Requirement
    from packaging.version import Version

    torch_requirements = [Requirement(text) for item in report["install"] for text in item["metadata"].get("requires_dist") or []
                          if Requirement(text).name == "torch" and (Requirement(text).marker is None or "extra" not in str(Requirement(text).marker))]  # fmt: skip
    minimum = Version(".".join(map(str, dependencies.TORCH_MINIMUM)))
    assert torch_requirements and all(req.specifier.contains(minimum, prereleases=True) for req in torch_requirements)
    assert any(not req.specifier.contains(Version("2.7.1")) for req in torch_requirements)


def test_slicer_5_8_python_cannot_install_the_pins_which_is_why_it_is_refused(tmp_path):
    info = REFUSED_RELEASES["5.8"]
    code, _, output = _resolve(tmp_path, info["python"], info["constraints"])
    missing = _unreachable(output)
    if code != 0 and missing:
        _fail_or_skip_unreachable(info["python"], missing, output)
    assert code != 0, "the pins resolved for Python 3.9: Slicer 5.8 might be supportable after all"
    assert re.search(
        r"No matching distribution found for (monai|safetensors|connected-components-3d|tqdm|timm|einops|dynamic-network-architectures)",
        output,
    ), output[-3000:]
    assert compatibility.unsupported_reason((5, 8), (3, 9))
