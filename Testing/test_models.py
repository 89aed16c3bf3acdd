"""Model folders: build, save, load with checksum verification, registry, clear errors."""

import json

import pytest
import torch

from LymphNodeQuantLib.errors import ModelError, OutputExistsError
from LymphNodeQuantLib.models.model_folder import (
    DEFAULT_LABELS,
    list_models,
    load_model,
    load_model_card,
    resolve_model,
    save_model_folder,
)
from LymphNodeQuantLib.models.networks import build_network, op_name, plain_unet_architecture


def tiny_architecture():
    return plain_unet_architecture(features_per_stage=(4, 8), strides=((1, 1, 1), (2, 2, 2)), kernel_sizes=((3, 3, 3),) * 2)


def tiny_card(name="tiny-test"):
    return {
        "name": name,
        "version": "0.0.1",
        "description": "randomly initialised network for tests",
        "architecture": tiny_architecture(),
        "input": {
            "spacing_zyx_mm": [3.0, 3.0, 3.0],
            "normalization": {"clip_hu": [-150, 350], "mean": 40.0, "std": 80.0},
            "patch_size_zyx": [16, 32, 32],
            "crop": "mediastinum",
        },
        "training": {"data": "none (random weights)"},
        "metrics": {},
    }


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    network = build_network(tiny_architecture())
    return save_model_folder(tmp_path / "tiny", network, tiny_card()), network


def test_build_network_from_json_names():
    architecture = tiny_architecture()
    json.dumps(architecture)  # JSON-able
    network = build_network(architecture)
    assert network(torch.zeros(1, 1, 8, 16, 16)).shape == (1, 2, 8, 16, 16)
    assert op_name(torch.nn.Conv3d) == "Conv3d" and op_name(None) is None
    dotted = json.loads(json.dumps(architecture))
    dotted["arguments"]["conv_op"] = "torch.nn.modules.conv.Conv3d"
    assert isinstance(build_network(dotted).encoder.stages[0][0].convs[0].conv, torch.nn.Conv3d)


def test_build_network_errors():
    with pytest.raises(ModelError, match="architecture must be"):
        build_network({"arguments": {}})
    with pytest.raises(ModelError, match="Unknown architecture"):
        build_network({"name": "NoSuchNet", "arguments": {}})
    bad = tiny_architecture()
    bad["arguments"]["conv_op"] = "NoSuchConv"
    with pytest.raises(ModelError, match="NoSuchConv"):
        build_network(bad)


def test_save_and_load_round_trip(tiny_model):
    folder, network = tiny_model
    card = json.loads((folder / "model.json").read_text())
    assert card["weights"]["file"] == "weights.safetensors"
    assert card["weights"]["size_bytes"] == (folder / "weights.safetensors").stat().st_size
    assert len(card["weights"]["sha256"]) == 64
    assert card["labels"] == DEFAULT_LABELS
    loaded = load_model(folder)
    assert loaded.card.name == "tiny-test" and not loaded.network.training
    x = torch.randn(1, 1, 8, 16, 16)
    network.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), network(x))
    assert load_model(folder / "model.json").card.title == "tiny-test 0.0.1"


def test_save_refuses_existing_and_mismatched(tiny_model, tmp_path):
    folder, network = tiny_model
    with pytest.raises(OutputExistsError):
        save_model_folder(folder, network, tiny_card())
    save_model_folder(folder, network, tiny_card(), overwrite=True)
    other = tiny_card()
    other["architecture"] = plain_unet_architecture(
        features_per_stage=(8, 16), strides=((1, 1, 1), (2, 2, 2)), kernel_sizes=((3, 3, 3),) * 2
    )
    with pytest.raises(ModelError, match="do not match"):
        save_model_folder(tmp_path / "other", network, other)
    assert not (tmp_path / "other" / "model.json").exists()


def test_corrupted_or_missing_weights_refused(tiny_model):
    folder, _ = tiny_model
    weights = folder / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        load_model(folder)
    weights.write_bytes(bytes(data[:-5]))
    with pytest.raises(ModelError, match="bytes but model.json expects"):
        load_model(folder)
    weights.unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(folder)


def test_missing_key_names_key_and_file(tiny_model):
    folder, _ = tiny_model
    card = json.loads((folder / "model.json").read_text())
    del card["input"]["patch_size_zyx"]
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match=r"input\.patch_size_zyx") as error:
        load_model_card(folder)
    assert "model.json" in str(error.value)
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model_card(folder)


def test_registry_and_resolution(tiny_model, tmp_path, monkeypatch):
    folder, _ = tiny_model
    monkeypatch.setenv("LNQ_MODEL_PATH", str(folder.parent))
    names = [entry["name"] for entry in list_models()]
    assert "tiny-test" in names
    assert resolve_model("tiny") == folder  # folder name in a registry path
    with pytest.raises(ModelError, match="not found"):
        resolve_model("no-such-model")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="holds no model.json"):
        resolve_model(empty)
