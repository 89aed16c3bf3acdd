"""The packaged default model: installed, intact, honest card, and it really finds phantom nodes."""

import json

import numpy as np

from LymphNodeQuantLib.evaluate import evaluate_case
from LymphNodeQuantLib.inference import segment_volume
from LymphNodeQuantLib.models.model_folder import DEFAULT_MODEL_NAME, list_models, load_model, resolve_model
from LymphNodeQuantLib.synthetic import make_phantom


def test_default_model_is_packaged_small_and_documented(repo_root):
    folder = resolve_model("default")
    assert folder == repo_root / "LymphNodeQuant" / "Resources" / "Models" / DEFAULT_MODEL_NAME
    card = json.loads((folder / "model.json").read_text())
    assert card["weights"]["size_bytes"] < 20 * 1024 * 1024
    assert "phantom" in json.dumps(card["training"]).lower()  # says plainly what it was trained on
    assert card["metrics"], "model.json must report measured scores"
    assert card["input"]["normalization"]["clip_hu"]
    assert [entry for entry in list_models() if entry["name"] == card["name"] and entry["default"]]
    loaded = load_model("default")  # checksum verified
    assert not loaded.network.training


def test_default_model_segments_an_unseen_phantom():
    # a seed and size no training run uses: small so the test stays fast on 2 cores
    phantom = make_phantom((48, 128, 128), (3.0, 2.4, 2.4), seed=424242)
    result = segment_volume(phantom.ct, "default", "cpu")
    assert result.labels.geometry.same_grid(phantom.ct.geometry)
    binary = result.labels.with_array((result.labels.array > 0).astype(np.uint8))
    scores = evaluate_case(binary, phantom.full_labels)
    assert scores.dice > 0.6, scores
    assert scores.true_positives >= 0.5 * scores.reference_nodes
