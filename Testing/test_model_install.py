"""``lnq models install``: published nnU-Net models (served from 127.0.0.1 by the test), zips, URLs and folders.

Nothing here reaches the internet: a local HTTP server (with Range support, and a mode that drops
the connection half-way) serves zips built from a tiny nnU-Net ResEnc results folder.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunet_folders import RESENC_ARCH_KWARGS, RESIDUAL_ENCODER_UNET, make_nnunet_folder

from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.errors import InputError, OutputExistsError
from LymphNodeQuantLib.inference import segment_volume
from LymphNodeQuantLib.model_install import LicenceNotAccepted, install_model, remove_model
from LymphNodeQuantLib.models.model_folder import list_models, load_model
from LymphNodeQuantLib.synthetic import make_phantom

PLANS_FOLDER = "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres"


class _Server(http.server.ThreadingHTTPServer):
    files: dict[str, bytes] = {}
    cut_after: dict[str, int] = {}  # filename -> bytes sent before the connection drops (once)
    requests: list[tuple[str, str]] = []  # (filename, Range header)


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        name = self.path.lstrip("/")
        server = self.server
        server.requests.append((name, self.headers.get("Range", "")))
        if name not in server.files:
            self.send_error(404)
            return
        data = server.files[name]
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        cut = server.cut_after.pop(name, None)
        self.wfile.write(data[start:cut] if cut is not None else data[start:])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True

    def do_HEAD(self):
        name = self.path.lstrip("/")
        self.send_response(200 if name in self.server.files else 404)
        self.send_header("Content-Length", str(len(self.server.files.get(name, b""))))
        self.end_headers()


@pytest.fixture
def server():
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.cut_after, httpd.requests = {}, {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _zip(entries: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def resenc(tmp_path_factory):
    """A tiny nnU-Net ResEnc results folder with two folds (random weights) and its networks."""
    folder, networks = make_nnunet_folder(
        tmp_path_factory.mktemp("resenc"), folds=(0, 1), network_class_name=RESIDUAL_ENCODER_UNET, arch_kwargs=RESENC_ARCH_KWARGS
    )
    return folder, networks


@pytest.fixture
def published(resenc, server, tmp_path, monkeypatch):
    """A registry entry 'test-lab:tiny-resenc' whose assets (lnq-segmenter bundle layout) the local server serves."""
    folder, _ = resenc
    assets = {"tiny-resenc-1.0.0-meta.zip": _zip({n: (folder / n).read_bytes() for n in ("dataset.json", "plans.json")})}
    for fold in (0, 1):
        assets[f"tiny-resenc-1.0.0-fold{fold}.zip"] = _zip(
            {f"{PLANS_FOLDER}/fold_{fold}/checkpoint_final.pth": (folder / f"fold_{fold}" / "checkpoint_final.pth").read_bytes()}
        )
    server.files.update(assets)
    entry = {
        "publisher": "test-lab",
        "name": "tiny-resenc",
        "version": "1.0.0",
        "licence": "CC BY-NC 4.0",
        "licence_requires_acceptance": True,
        "recommended_use": "Tests only. Not for diagnostic use.",
        "url_template": f"http://127.0.0.1:{server.server_address[1]}/{{filename}}",
        "assets": [{"role": "meta", "filename": "tiny-resenc-1.0.0-meta.zip"}]
        + [{"role": "fold", "fold": f, "filename": f"tiny-resenc-1.0.0-fold{f}.zip"} for f in (0, 1)],
    }
    for asset in entry["assets"]:
        data = assets[asset["filename"]]
        asset.update(size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    registry = tmp_path / "registry.json"
    registry.write_text(json.dumps({"models": [entry]}))
    models_dir = tmp_path / "models"
    monkeypatch.setenv("LNQ_MODEL_REGISTRY", str(registry))
    monkeypatch.setenv("LNQ_MODELS_DIR", str(models_dir))
    return {"entry": entry, "registry": registry, "models_dir": models_dir, "assets": assets}


def _leftovers(models_dir: Path) -> list[str]:
    return (
        sorted(p.name for p in models_dir.iterdir() if p.name.startswith((".staging", ".previous", ".removing")))
        if models_dir.exists()
        else []
    )


def test_resenc_results_folder_loads_exactly_and_segments(resenc):
    folder, networks = resenc
    loaded = load_model(folder)
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        expected = sum(n.eval()(x) for n in networks) / 2
        assert torch.allclose(loaded.network(x), expected, atol=1e-5)
    assert loaded.card.architecture["name"] == RESIDUAL_ENCODER_UNET
    ct = make_phantom((32, 80, 80), (3.0, 4.0, 4.0), seed=5).ct
    result = segment_volume(ct, loaded, "cpu", anatomy_filter=False)
    assert result.labels.geometry.same_grid(ct.geometry) and result.labels.array.shape == ct.array.shape


def test_published_model_installs_chosen_folds_and_runs(published, tmp_path, capsys):
    assert main(["models", "install", "test-lab:tiny-resenc", "--folds", "0", "--accept-licence"]) == 0
    installed = published["models_dir"] / "tiny-resenc"
    assert sorted(p.name for p in installed.iterdir()) == ["dataset.json", "fold_0", "lnq-install.json", "plans.json"]
    record = json.loads((installed / "lnq-install.json").read_text())
    assert record["source"] == "test-lab:tiny-resenc" and record["folds"] == [0] and record["licence"] == "CC BY-NC 4.0"
    assert not (published["models_dir"] / ".downloads" / "tiny-resenc-1.0.0-fold0.zip").exists()  # the zips are gone
    assert _leftovers(published["models_dir"]) == []
    listed = {m["name"]: m for m in list_models()}
    assert listed["tiny-resenc"]["licence"] == "CC BY-NC 4.0" and listed["tiny-resenc"]["format"] == "nnunetv2"
    capsys.readouterr()
    assert main(["models"]) == 0
    assert "tiny-resenc" in capsys.readouterr().out
    loaded = load_model("test-lab:tiny-resenc")
    assert loaded.card.name == "tiny-resenc" and "folds 0" in loaded.card.version
    assert main(["models", "remove", "tiny-resenc"]) == 0 and not installed.exists()


def test_licence_must_be_accepted_once(published, capsys):
    with pytest.raises(LicenceNotAccepted, match="CC BY-NC 4.0.*Not for diagnostic use"):
        install_model("test-lab:tiny-resenc")
    assert main(["models", "install", "test-lab:tiny-resenc"]) == 2  # no terminal to ask: a clear refusal
    assert "--accept-licence" in capsys.readouterr().err
    assert not (published["models_dir"] / ".downloads").exists()  # nothing was downloaded
    install_model("test-lab:tiny-resenc", folds=[1], accept_licence=True)
    install_model("test-lab:tiny-resenc", folds=[0], overwrite=True)  # accepted once is enough


def test_wrong_checksum_installs_nothing(published, server):
    good = server.files["tiny-resenc-1.0.0-fold0.zip"]
    server.files["tiny-resenc-1.0.0-fold0.zip"] = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]  # one byte off, same size
    with pytest.raises(InputError, match="fails its checksum.*nothing was installed"):
        install_model("test-lab:tiny-resenc", folds=[0], accept_licence=True)
    models_dir = published["models_dir"]
    assert not (models_dir / "tiny-resenc").exists() and _leftovers(models_dir) == []
    assert not list((models_dir / ".downloads").glob("*fold0*"))  # the bad bytes were deleted


def test_interrupted_download_resumes(published, server):
    name = "tiny-resenc-1.0.0-fold0.zip"
    server.cut_after[name] = len(server.files[name]) // 2
    with pytest.raises(InputError, match="run the same command again"):
        install_model("test-lab:tiny-resenc", folds=[0], accept_licence=True)
    part = published["models_dir"] / ".downloads" / f"{name}.part"
    assert part.stat().st_size == len(server.files[name]) // 2
    assert not (published["models_dir"] / "tiny-resenc").exists() and _leftovers(published["models_dir"]) == []
    install_model("test-lab:tiny-resenc", folds=[0], accept_licence=True)
    ranges = [r for n, r in server.requests if n == name]
    assert ranges == ["", f"bytes={len(server.files[name]) // 2}-"]  # the second request asked only for the rest
    assert (published["models_dir"] / "tiny-resenc" / "fold_0" / "checkpoint_final.pth").is_file()


def test_zip_without_a_model_and_escaping_zip_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("LNQ_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "notes.zip").write_bytes(_zip({"readme.txt": b"hello", "data/values.csv": b"1,2"}))
    with pytest.raises(InputError, match="No model found"):
        install_model(str(tmp_path / "notes.zip"))
    (tmp_path / "evil.zip").write_bytes(_zip({"model/model.json": b"{}", "../../evil.txt": b"gotcha"}))
    with pytest.raises(InputError, match="outside the model folder"):
        install_model(str(tmp_path / "evil.zip"))
    assert not (tmp_path / "evil.txt").exists() and not list(tmp_path.rglob("evil.txt"))
    assert [p.name for p in (tmp_path / "models").iterdir()] == []  # nothing half-installed


def test_exported_nnunet_zip_url_and_existing_model(resenc, server, tmp_path, monkeypatch):
    monkeypatch.setenv("LNQ_MODELS_DIR", str(tmp_path / "models"))
    folder, _ = resenc
    exported = {
        f"Dataset901_TinyLNQ/{folder.name}/{p.relative_to(folder).as_posix()}": p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file()
    }  # the layout nnUNetv2_export_model_to_zip writes
    server.files["export.zip"] = _zip(exported)
    url = f"http://127.0.0.1:{server.server_address[1]}/export.zip"
    with pytest.raises(InputError, match="--sha256"):
        install_model(url)
    digest = hashlib.sha256(server.files["export.zip"]).hexdigest()
    installed = install_model(url, sha256=digest, name="exported")
    assert sorted(p.name for p in installed.glob("fold_*")) == ["fold_0", "fold_1"]
    before = (installed / "lnq-install.json").read_text()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        install_model(str(folder), name="exported")
    assert (installed / "lnq-install.json").read_text() == before  # the installed model is untouched
    replaced = install_model(str(folder), name="exported", folds=[1], overwrite=True)
    assert sorted(p.name for p in replaced.glob("fold_*")) == ["fold_1"] and (folder / "fold_0").exists()  # source kept
    remove_model("exported")
    with pytest.raises(InputError, match="No installed model"):
        remove_model("exported")


def test_native_model_folder_installs_and_is_found_by_name(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("LNQ_MODELS_DIR", str(tmp_path / "models"))
    installed = install_model(str(tiny_model), name="my-model")
    loaded = load_model("my-model")
    assert loaded.card.name == "tiny-cli" and installed == tmp_path / "models" / "my-model"
    broken = tmp_path / "broken"
    import shutil

    shutil.copytree(tiny_model, broken)
    weights = broken / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + np.zeros(8, np.uint8).tobytes())
    with pytest.raises(Exception, match="checksum"):
        install_model(str(broken), name="broken")
    assert not (tmp_path / "models" / "broken").exists() and _leftovers(tmp_path / "models") == []


def _mrml_package():
    import sys

    module_dir = str(Path(__file__).resolve().parents[1] / "LymphNodeQuant")
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)
    from LymphNodeQuantMRML import model_installs, runner

    return model_installs, runner


def test_slicer_side_lists_installable_models_and_installs_in_the_background(published):
    """The module's model list and background install (lnq models install --progress json in its own process)."""
    model_installs, runner = _mrml_package()
    choices = {c.name: c for c in model_installs.model_choices()}
    offered = choices["test-lab:tiny-resenc"]
    assert not offered.installed and offered.size_bytes == sum(a["size_bytes"] for a in published["entry"]["assets"])
    assert "CC BY-NC 4.0" in offered.label and "Not for diagnostic use" in offered.description
    refused = model_installs.BackgroundModelInstall("test-lab:tiny-resenc", folds=[0])  # licence not accepted
    with pytest.raises(runner.EngineProcessError, match="licence"):
        refused.wait()
    job = model_installs.BackgroundModelInstall("test-lab:tiny-resenc", folds=[0], accept_licence=True)
    fractions = []
    assert job.wait(progress=lambda fraction, stage: fractions.append((fraction, stage))) == "tiny-resenc"
    assert fractions and fractions[-1][0] == 1.0 and "downloading" in fractions[-1][1]
    choices = {c.name: c for c in model_installs.model_choices()}
    assert choices["tiny-resenc"].installed and "test-lab:tiny-resenc" not in choices


def test_cancelled_background_install_leaves_nothing_installed(published, server):
    model_installs, _ = _mrml_package()
    job = model_installs.BackgroundModelInstall("test-lab:tiny-resenc", folds=[0], accept_licence=True)
    job.cancel()  # kills the process group at once, wherever it is
    assert job.process.finished and not (published["models_dir"] / "tiny-resenc").exists()
    install_model("test-lab:tiny-resenc", folds=[0], accept_licence=True)  # a later install cleans up and works
    assert (published["models_dir"] / "tiny-resenc").is_dir() and _leftovers(published["models_dir"]) == []
