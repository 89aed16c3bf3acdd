"""nnU-Net v2 model folders as --model: plans -> network + preprocessing, folds ensembled, clear errors."""

import json

import numpy as np
import pytest
import torch
from nnunet_folders import make_nnunet_folder

from LymphNodeQuantLib.cli import main
from LymphNodeQuantLib.errors import ModelError
from LymphNodeQuantLib.inference import segment_volume
from LymphNodeQuantLib.io import read_volume, write_volume
from LymphNodeQuantLib.models.model_folder import load_model, load_model_card
from LymphNodeQuantLib.synthetic import make_phantom


def test_card_follows_plans(tmp_path):
    folder, _ = make_nnunet_folder(tmp_path, transpose=(2, 0, 1))
    card = load_model_card(folder)
    assert card.name == "nnunet:Dataset901_TinyLNQ:3d_fullres"
    # plans spacing is in transposed order: model axis a = image axis transpose[a]
    assert card.spacing_zyx_mm == (5.0, 4.0, 3.0)
    assert card.patch_size_zyx == (8, 32, 32)
    assert card.normalization == {"clip_hu": [-120.0, 280.0], "mean": 35.5, "std": 55.0}
    assert card.crop == "none" and card.foreground_channel == 1


def test_loaded_network_equals_checkpoint(tmp_path):
    folder, (network,) = make_nnunet_folder(tmp_path)
    loaded = load_model(folder)
    assert loaded.kind == "nnunetv2"
    x = torch.randn(1, 1, 8, 32, 32)
    network.eval()
    with torch.no_grad():
        assert torch.allclose(loaded.network(x), network(x))


def test_folds_are_ensembled_by_logit_average(tmp_path):
    """Checked by properties, not by re-typing the formula: duplicated folds change nothing, fold order
    does not matter, and the ensemble is the logit midpoint (not the probability average) of two folds."""
    x = torch.randn(1, 1, 8, 32, 32)
    twin_folder, (single, _) = make_nnunet_folder(tmp_path / "twins", folds=(0, 1), fold_seeds={0: 7, 1: 7})
    with torch.no_grad():
        assert torch.allclose(load_model(twin_folder).network(x), single.eval()(x), atol=1e-6)  # a sum without /n fails
    pair, (first, second) = make_nnunet_folder(
        tmp_path / "pair", folds=(0, 1), fold_seeds={0: 1, 1: 2}, checkpoint_extra={"logging": {"ema": np.float64(0.5)}}
    )
    swapped, _ = make_nnunet_folder(tmp_path / "swapped", folds=(0, 1), fold_seeds={0: 2, 1: 1})
    loaded = load_model(pair)
    with torch.no_grad():
        ensemble, a, b = loaded.network(x), first.eval()(x), second.eval()(x)
        assert torch.allclose(ensemble, load_model(swapped).network(x), atol=1e-6)  # no fold is weighted more
        assert not torch.allclose(a, b, atol=1e-3)  # the two folds really differ
        assert torch.allclose(ensemble - a, b - ensemble, atol=1e-5)  # midpoint of the logits
        probability_average = (a.softmax(1) + b.softmax(1)) / 2
        assert not torch.allclose(ensemble.softmax(1), probability_average, atol=1e-4)  # nnU-Net averages logits
    assert any("full unpickling" in m for m in loaded.card.data["load_messages"])


def test_segment_with_nnunet_folder(tmp_path, capsys):
    folder, _ = make_nnunet_folder(tmp_path, transpose=(0, 2, 1))
    phantom = make_phantom((30, 64, 64), (3.0, 4.0, 4.0), seed=2)
    result = segment_volume(phantom.ct, str(folder), "cpu", min_node_volume_mm3=0)
    assert result.labels.geometry.same_grid(phantom.ct.geometry)
    assert result.crop_box_zyx == ((0, 0, 0), (30, 64, 64))
    ct_path = write_volume(tmp_path / "ct.nrrd", phantom.ct)
    out = tmp_path / "seg.seg.nrrd"
    assert main(["segment", str(ct_path), "--out", str(out), "--model", str(folder), "--progress", "none"]) == 0
    assert np.array_equal(read_volume(out).array, result.labels.array)


def test_nnunet_folder_errors(tmp_path):
    folder, _ = make_nnunet_folder(tmp_path)
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["normalization_schemes"] = ["ZScoreNormalization"]
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="CTNormalization"):
        load_model(folder)
    (tmp_path / "empty").mkdir()
    other, _ = make_nnunet_folder(tmp_path / "empty")
    (other / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(ModelError, match="checkpoint_final"):
        load_model(other)
    third, _ = make_nnunet_folder(tmp_path / "third")
    (third / "fold_0" / "checkpoint_final.pth").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="Cannot read nnU-Net checkpoint"):
        load_model(third)
