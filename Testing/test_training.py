"""Training library: strategies' targets, losses, DBDMP, cache, sampling, resume, export, CLI.

Tiny phantoms (40 x 96 x 96 at 3.5 mm) and tiny networks keep the whole file to well under a minute
on 2 cores. The DDP test (2 gloo processes) lives in test_training_ddp.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch  # a hard dependency: a broken install must fail, not skip

from LymphNodeQuantLib.errors import InputError, ModelError, OutputExistsError
from LymphNodeQuantLib.geometry import ImageGeometry, Volume
from LymphNodeQuantLib.io import write_volume
from LymphNodeQuantLib.models.networks import plain_unet_architecture
from LymphNodeQuantLib.synthetic import ANATOMY_IDS, make_phantom
from LymphNodeQuantLib.training import strategies
from LymphNodeQuantLib.training.cache import IGNORE, CachedCase, build_cache, load_or_build_case
from LymphNodeQuantLib.training.config import AugmentationSettings, DBDMPSettings, TrainingConfig
from LymphNodeQuantLib.training.dataset import find_cases
from LymphNodeQuantLib.training.phantom_dataset import write_phantom_dataset
from LymphNodeQuantLib.training.totalsegmentator import (
    DEFAULT_BACKGROUND_CLASSES,
    TOTALSEG_V2_TOTAL_IDS,
    background_mask,
    class_ids_for,
    phantom_anatomy_to_totalseg,
    read_totalseg_map,
)

TINY_SHAPE, TINY_SPACING = (40, 96, 96), (3.0, 3.5, 3.5)


def tiny_config(**overrides) -> TrainingConfig:
    values = dict(
        spacing_zyx_mm=TINY_SPACING,
        patch_size_zyx=(16, 32, 32),
        epochs=2,
        iterations_per_epoch=2,
        batch_size=2,
        architecture=plain_unet_architecture(
            features_per_stage=(4, 8, 16),
            strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)),
            kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3)),
        ),
        num_threads=1,
        seed=3,
        strategy="masking",
    )
    values.update(overrides)
    return TrainingConfig(**values)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(TINY_SHAPE, TINY_SPACING, seed=5, n_nodes=8)


@pytest.fixture(scope="module")
def phantom_case(phantom) -> CachedCase:
    """A phantom as a cached training case on its own grid (no crop/resample), partial labels."""
    hu = phantom.ct.array
    return CachedCase(
        "p5",
        "train",
        "partial",
        ((np.clip(hu, -250, 450)) / 150.0).astype(np.float32),
        hu.astype(np.int16),
        phantom.partial_labels.array.copy(),
        phantom_anatomy_to_totalseg(phantom.anatomy_labels.array),
        phantom.ct.geometry,
    )


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("phantoms")
    write_phantom_dataset(folder, train_seeds=[1, 2], validation_seeds=[3], shape_zyx=TINY_SHAPE, spacing_zyx_mm=TINY_SPACING)
    return folder


# ------------------------------------------------------------------------------------ strategies
def test_noisy_target_is_the_partial_label(phantom, phantom_case):
    target = strategies.build_target(phantom_case, tiny_config(), "noisy")
    np.testing.assert_array_equal(target, phantom.partial_labels.array)
    unannotated = (phantom.full_labels.array == 1) & (phantom.partial_labels.array == 0)
    assert unannotated.any() and (target[unannotated] == 0).all()  # unlabelled nodes taught as background


def test_masking_excludes_unlabelled_soft_tissue(phantom, phantom_case):
    config = tiny_config()
    target = strategies.build_target(phantom_case, config, "masking")
    partial = phantom.partial_labels.array == 1
    hu = phantom_case.hu
    low, high = config.masking_hu_window
    assert (target[partial] == 1).all() and not ((target == 1) & ~partial).any()
    unlabelled = ~partial
    in_window = (hu >= low) & (hu <= high)
    assert (target[unlabelled & in_window] == IGNORE).all()  # could be a node: excluded from the loss
    assert (target[unlabelled & ~in_window] == 0).all()  # air, lung, fat, bone, contrast: background
    # the cores of unannotated nodes (not blurred into fat) are excluded, never taught as background
    unannotated = (phantom.full_labels.array == 1) & unlabelled
    assert (target[unannotated] == IGNORE).mean() > 0.8


def test_coating_shell_has_the_configured_margin():
    label = np.zeros((9, 21, 21), np.uint8)
    label[4, 10, 10] = 1
    spacing = (3.0, 1.0, 1.0)
    target = strategies.coating_target(label, spacing, margin_mm=2.5)
    z, y, x = np.indices(label.shape)
    distance = np.sqrt(((z - 4) * 3.0) ** 2 + (y - 10) ** 2 + (x - 10) ** 2)
    expected = np.full(label.shape, IGNORE, np.uint8)
    expected[(distance > 0) & (distance <= 2.5)] = 0
    expected[label == 1] = 1
    np.testing.assert_array_equal(target, expected)
    assert (target[3] == IGNORE).all()  # the next slice is 3 mm away: outside a 2.5 mm coat


def test_totalseg_anatomy_is_background_and_never_overwrites_nodes(phantom, phantom_case):
    config = tiny_config()
    target = strategies.build_target(phantom_case, config, "totalseg")
    anatomy = background_mask(phantom_case.totalseg)
    partial = phantom.partial_labels.array == 1
    assert (target[anatomy & ~partial] == 0).all()
    assert (target[partial] == 1).all()
    # the oesophagus has node density: masking excludes it, the TotalSegmentator map makes it background
    esophagus = phantom.anatomy_labels.array == ANATOMY_IDS["esophagus"]
    masking = strategies.build_target(phantom_case, config, "masking")
    assert (masking[esophagus] == IGNORE).any() and (target[esophagus] == 0).all()
    # an anatomy map that overlaps a labelled node never turns it into background
    overlapping = phantom_case.totalseg.copy()
    overlapping[partial] = TOTALSEG_V2_TOTAL_IDS["aorta"]
    forced = strategies.totalseg_target(phantom_case.label, phantom_case.hu, overlapping, config.masking_hu_window)
    assert (forced[partial] == 1).all()


def test_mediastinum_region_is_the_widened_convex_hull_of_both_lungs():
    # two square "lungs" in slice 1 only; in-plane spacing 2 x 1 mm (y, x)
    left = np.zeros((3, 20, 30), bool)
    right = np.zeros_like(left)
    left[1, 5:15, 20:25] = True
    right[1, 5:15, 3:8] = True
    region = strategies.mediastinum_region(left, right, (3.0, 2.0, 1.0), margin_mm=0.0)
    hull = np.zeros((20, 30), bool)
    hull[5:15, 3:25] = True  # the hull of two axis-aligned boxes at the same rows is their spanning box
    np.testing.assert_array_equal(region[1], hull)
    assert region[0].all() and region[2].all()  # slices without both lungs: no claim
    widened = strategies.mediastinum_region(left, right, (3.0, 2.0, 1.0), margin_mm=2.0)
    # 2 mm = 1 row (2 mm spacing) above/below and 2 columns (1 mm spacing) left/right
    expected = np.zeros((20, 30), bool)
    expected[4:16, 1:27] = True
    np.testing.assert_array_equal(widened[1], expected)


def test_totalseg_chest_wall_is_background_and_unlabelled_nodes_stay_unknown():
    from LymphNodeQuantLib.training.totalsegmentator import lung_masks

    phantom = make_phantom((48, 160, 160), (3.0, 2.5, 2.5), seed=11)
    anatomy = phantom.anatomy_labels.array
    totalseg = phantom_anatomy_to_totalseg(anatomy)
    hu = phantom.ct.array
    left, right = lung_masks(totalseg)
    both = (left.any(axis=(1, 2)) & right.any(axis=(1, 2)))[:, None, None]
    target = strategies.totalseg_target(
        phantom.partial_labels.array, hu, totalseg, (-50.0, 170.0), spacing_zyx_mm=(3.0, 2.5, 2.5), mediastinum_margin_mm=5.0
    )
    without_prior = strategies.totalseg_target(phantom.partial_labels.array, hu, totalseg, (-50.0, 170.0))
    # chest-wall muscle (soft tissue of the body outside the organs) in slices with both lungs
    chest_wall = (anatomy == ANATOMY_IDS["body"]) & (hu > -20) & both
    chest_wall &= ~strategies.mediastinum_region(left, right, (3.0, 2.5, 2.5), 5.0)
    assert chest_wall.sum() > 1000
    assert (without_prior[chest_wall] == IGNORE).mean() > 0.9  # masking alone cannot tell it from a node
    assert (target[chest_wall] == 0).all()
    unlabelled_nodes = (phantom.node_labels.array > 0) & (phantom.partial_labels.array == 0)
    assert unlabelled_nodes.any()
    assert (target[unlabelled_nodes] == 0).mean() < 0.05  # nodes lie inside the mediastinum
    assert (target[phantom.partial_labels.array == 1] == 1).all()


def test_anatomy_strategy_on_a_real_ct_with_implanted_nodes(shared_data):
    """Real CT + implanted nodes: implanted = node, chest wall/lung/bone = background, the scan's own
    mediastinal soft tissue (where its real, unlabelled nodes are) stays out of the loss."""
    from LymphNodeQuantLib.anatomy import find_chest_anatomy
    from LymphNodeQuantLib.io import read_volume
    from LymphNodeQuantLib.training.implant import implant_nodes

    ct = read_volume(shared_data / "totalseg-mediastinum" / "ct_cropped.nii.gz")
    implanted = implant_nodes(ct, seed=4, n_nodes=4)
    hu = implanted.ct.array
    label = (implanted.labels.array > 0).astype(np.uint8)
    mediastinum = find_chest_anatomy(implanted.ct).mediastinum_in_box((0, 0, 0), hu.shape).astype(np.uint8)
    target = strategies.anatomy_target(label, hu, mediastinum, (-50.0, 170.0), ct.geometry.spacing_zyx_mm, 20.0)
    assert (target[label == 1] == 1).all()
    soft = (hu > -50) & (hu < 170) & (label == 0)
    assert (target[soft & (mediastinum == 0)] == 0).all()  # chest wall, abdomen: background
    assert (target[(hu < -400) | (hu > 300)] == 0).all()  # lung, air, bone, dense contrast
    unknown = target[soft & (mediastinum == 1)]
    assert unknown.size > 1000 and (unknown == IGNORE).mean() > 0.5  # mediastinal soft tissue: not forced to background
    # the heart's interior (soft tissue deeper than 20 mm) is background even inside the mediastinum
    from scipy import ndimage

    depth = ndimage.distance_transform_edt((hu >= -50) & (hu <= 170), sampling=ct.geometry.spacing_zyx_mm)
    assert (target[(depth > 20.0) & (label == 0)] == 0).all()


def test_anatomy_strategy_needs_a_cached_mediastinum(phantom_case):
    with pytest.raises(InputError, match="mediastinum"):
        strategies.build_target(CachedCase(**{**phantom_case.__dict__, "mediastinum": None}), tiny_config(), "anatomy")


def test_totalseg_strategy_needs_a_map(phantom_case):
    case = CachedCase(**{**phantom_case.__dict__, "totalseg": None})
    with pytest.raises(InputError, match="TotalSegmentator"):
        strategies.build_target(case, tiny_config(), "totalseg")


def test_totalseg_reader_file_folder_and_names(tmp_path, phantom):
    ids = phantom_anatomy_to_totalseg(phantom.anatomy_labels.array)
    assert set(np.unique(ids)) <= {0, *TOTALSEG_V2_TOTAL_IDS.values()}
    assert (ids[phantom.anatomy_labels.array == ANATOMY_IDS["aorta"]] == 52).all()
    write_volume(tmp_path / "map.nii.gz", Volume(ids, phantom.ct.geometry))
    np.testing.assert_array_equal(read_totalseg_map(tmp_path / "map.nii.gz").array, ids)
    folder = tmp_path / "case"  # TotalSegmentator's default output: one mask per structure
    folder.mkdir()
    for name in ("aorta", "trachea"):
        write_volume(
            folder / f"{name}.nii.gz", Volume((ids == TOTALSEG_V2_TOTAL_IDS[name]).astype(np.uint8), phantom.ct.geometry)
        )
    merged = read_totalseg_map(folder).array
    assert set(np.unique(merged)) == {0, 52, 16}
    assert set(DEFAULT_BACKGROUND_CLASSES) <= set(TOTALSEG_V2_TOTAL_IDS)
    with pytest.raises(InputError, match="not a TotalSegmentator"):
        class_ids_for(["lymph_node_magic"])


def test_real_totalsegmentator_example_is_read(shared_data):
    volume = read_totalseg_map(shared_data / "totalseg-example" / "example_seg.nii.gz")
    mask = background_mask(volume.array)
    assert mask.any() and not mask.all()
    assert not np.isin(volume.array[mask], class_ids_for(["liver", "spleen"])).any()  # abdomen not in the default list


# ------------------------------------------------------------------------------------------ losses
def test_losses_ignore_excluded_voxels():
    from LymphNodeQuantLib.training.losses import dice_ce_loss

    logits = torch.randn(1, 2, 4, 8, 8)
    target = torch.randint(0, 2, (1, 4, 8, 8))
    changed = logits.clone()
    ignored = target.clone()
    ignored[:, :2] = IGNORE
    changed[:, :, :2] = torch.randn(1, 2, 2, 8, 8) * 10  # predictions on ignored voxels must not matter
    assert torch.allclose(dice_ce_loss(logits, ignored), dice_ce_loss(changed, ignored))
    assert float(dice_ce_loss(logits, torch.full_like(target, IGNORE))) == pytest.approx(0.0, abs=1e-6)  # nothing known: no loss


def test_dbdmp_pseudo_labels_and_loss_terms():
    from LymphNodeQuantLib.training.dbdmp import consensus_kl_ce, dbdmp_loss, mixed_pseudo_label, sigmoid_rampup

    torch.manual_seed(0)
    main, aux = torch.randn(2, 2, 4, 8, 8), torch.randn(2, 2, 4, 8, 8)
    p_main, p_aux = torch.softmax(main, 1), torch.softmax(aux, 1)
    pseudo = mixed_pseudo_label(p_main, p_aux, beta=0.3, tau=0.3)
    assert torch.allclose(pseudo.sum(1), torch.ones(2, 4, 8, 8))
    plain = torch.softmax(0.3 * p_main + 0.7 * p_aux, 1)  # temperature 1: less sharp
    assert (pseudo.max(1).values >= plain.max(1).values - 1e-6).all()
    mix = 0.3 * p_main + 0.7 * p_aux
    assert torch.equal(pseudo.argmax(1), mix.argmax(1))  # sharpening keeps the decision
    assert torch.equal(mixed_pseudo_label(p_main, p_aux, 1.0, 0.3).argmax(1), p_main.argmax(1))
    # identical branches: KL = 0, weights 1, the loss is the mean cross-entropy to the pseudo-label
    same = consensus_kl_ce(main, main, pseudo)
    ce = -(pseudo * torch.log_softmax(main, 1)).sum(1).mean()
    assert float(same) == pytest.approx(float(ce), rel=1e-5)
    assert float(consensus_kl_ce(main, aux, pseudo)) > 0
    assert sigmoid_rampup(0.0, 0.4) == pytest.approx(np.exp(-5)) and sigmoid_rampup(0.5, 0.4) == 1.0
    target = torch.randint(0, 2, (2, 4, 8, 8))
    target[:, :2] = IGNORE
    settings = DBDMPSettings.from_dict({"gamma": 0.8, "alpha": 0.4, "tau": 0.3, "lambda": 2.0, "rampup_fraction": 0.4})
    total, parts = dbdmp_loss(main.requires_grad_(), aux, target, progress=1.0, settings=settings, beta=0.5)
    assert torch.isfinite(total) and all(np.isfinite(v) for v in parts.values()) and parts["pseudo_weight"] == 2.0
    total.backward()
    assert torch.isfinite(main.grad).all()


@pytest.mark.parametrize("strategy", ["noisy", "masking", "coating", "totalseg", "dbdmp"])
def test_a_few_iterations_lower_the_loss_on_a_fixed_batch(strategy, phantom_case):
    from LymphNodeQuantLib.training.sampling import PatchSampler
    from LymphNodeQuantLib.training.trainer import build_model, compute_loss

    torch.set_num_threads(1)
    config = tiny_config(strategy=strategy, epochs=1, iterations_per_epoch=1000)
    target = strategies.build_target(phantom_case, config)
    sampler = PatchSampler([phantom_case.image], [target], foreground_fraction=1.0, seed=0)
    rng = np.random.default_rng(0)
    patches = [sampler.sample(rng, (16, 32, 32)) for _ in range(2)]
    images = torch.from_numpy(np.stack([p[0] for p in patches])[:, None])
    targets = torch.from_numpy(np.stack([p[1] for p in patches]).astype(np.int64))
    model = build_model(config)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        optimizer.zero_grad()
        loss, _ = compute_loss(model, images, targets, config, iteration=500)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


# ------------------------------------------------------------------------- data, cache, sampling
def test_dataset_discovery_and_cache_fingerprint(tiny_dataset, tmp_path):
    cases = find_cases(tiny_dataset)
    assert [(c.case_id, c.split, c.annotation) for c in cases] == [
        ("train-1", "train", "partial"),
        ("train-2", "train", "partial"),
        ("val-3", "validation", "full"),
    ]
    assert all(c.totalseg_path is not None for c in cases)
    settings = tiny_config().preprocessing_settings()
    first, reused = load_or_build_case(cases[0], tmp_path, settings)
    assert not reused and first.image.dtype == np.float32 and first.totalseg is not None
    again, reused = load_or_build_case(cases[0], tmp_path, settings)
    assert reused and np.array_equal(again.image, first.image)
    assert not load_or_build_case(cases[0], tmp_path, {**settings, "spacing_zyx_mm": [3.0, 4.0, 4.0]})[1]
    # a changed source file invalidates the entry
    rebuilt, _ = load_or_build_case(cases[0], tmp_path, settings)
    label_path = cases[0].label_path
    from LymphNodeQuantLib.io import read_volume

    label = read_volume(label_path)
    write_volume(label_path, label.with_array(np.zeros_like(label.array)), overwrite=True)
    try:
        changed, reused = load_or_build_case(find_cases(tiny_dataset)[0], tmp_path, settings)
        assert not reused and changed.label.max() == 0
    finally:
        write_volume(label_path, label, overwrite=True)


def test_nnunet_layout_with_ignore_label(tmp_path, phantom):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    labels = phantom.partial_labels.array.copy()
    labels[:3] = 2  # nnU-Net "ignore" label
    write_volume(tmp_path / "imagesTr" / "lnq_001_0000.nii.gz", phantom.ct)
    write_volume(tmp_path / "labelsTr" / "lnq_001.nii.gz", phantom.partial_labels.with_array(labels))
    (tmp_path / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "CT"},
                "labels": {"background": 0, "node": 1, "ignore": 2},
                "file_ending": ".nii.gz",
                "numTraining": 1,
            }
        )
    )
    cases = find_cases(tmp_path)
    assert len(cases) == 1 and cases[0].ignore_label == 2
    cached = build_cache(cases, tmp_path / "cache", {**tiny_config().preprocessing_settings(), "crop": "none"})[0]
    assert (cached.label[:3] == IGNORE).all() and set(np.unique(cached.label)) <= {0, 1, IGNORE}


def test_dataset_errors_are_clear(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        find_cases(tmp_path / "missing")
    with pytest.raises(InputError, match="No cases"):
        find_cases(tmp_path)
    (tmp_path / "a-ct.nrrd").write_bytes(b"")
    with pytest.raises(InputError, match="no label"):
        find_cases(tmp_path)


def test_foreground_oversampling_and_padding():
    from LymphNodeQuantLib.training.sampling import PatchSampler, extract_patch

    image = np.zeros((10, 40, 40), np.float32)
    target = np.zeros((10, 40, 40), np.uint8)
    target[5, 30:32, 30:32] = 1
    sampler = PatchSampler([image], [target], foreground_fraction=1.0)
    rng = np.random.default_rng(1)
    assert all((sampler.sample(rng, (4, 8, 8))[1] == 1).any() for _ in range(20))
    patch = extract_patch(target, np.array([-2, -2, -2]), np.array([4, 4, 4]), IGNORE)
    assert (patch[:2] == IGNORE).all() and (patch[2:, 2:, 2:] == 0).all()


def test_augmentation_is_reproducible_and_keeps_labels_valid(phantom_case):
    from LymphNodeQuantLib.training.augmentation import PatchAugmenter

    augmenter = PatchAugmenter(
        (16, 32, 32), AugmentationSettings(spatial_probability=1.0, elastic_probability=0.5, intensity_probability=1.0)
    )
    target = strategies.build_target(phantom_case, tiny_config(), "masking")
    size = augmenter.input_size()
    image_in, target_in = (
        phantom_case.image[: size[0], 20 : 20 + size[1], 20 : 20 + size[2]],
        target[: size[0], 20 : 20 + size[1], 20 : 20 + size[2]],
    )
    a = augmenter(image_in, target_in, seed=7)
    b = augmenter(image_in, target_in, seed=7)
    c = augmenter(image_in, target_in, seed=8)
    assert a[0].shape == (16, 32, 32) and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert set(np.unique(a[1])) <= {0, 1, IGNORE}


# ---------------------------------------------------------------------- training, resume, export
def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_resume_after_interruption_gives_identical_weights(tiny_dataset, tmp_path):
    from LymphNodeQuantLib.training.trainer import train

    config = tiny_config(strategy="totalseg")
    cache = tmp_path / "cache"
    straight = train(config, tiny_dataset, tmp_path / "straight", cache_dir=cache, show_progress=False)
    assert straight.finished and len(straight.metrics) == 2
    interrupted = train(config, tiny_dataset, tmp_path / "resumed", cache_dir=cache, stop_after_epochs=1, show_progress=False)
    assert not interrupted.finished and interrupted.epochs_completed == 1
    resumed = train(config, tiny_dataset, tmp_path / "resumed", cache_dir=cache, show_progress=False)
    assert resumed.finished and [m["epoch"] for m in resumed.metrics] == [1, 2]
    a, b = _weights(tmp_path / "straight" / "checkpoint_latest.pt"), _weights(tmp_path / "resumed" / "checkpoint_latest.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the metrics log: CSV with one row per epoch, validation Dice from the evaluation module, and a plot
    rows = (tmp_path / "resumed" / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("epoch,iterations,train_loss") and len(rows) == 3
    last_row = dict(zip(rows[0].split(","), rows[-1].split(",")))
    assert float(last_row["val_dice"]) == pytest.approx(
        resumed.metrics[-1]["val_dice"], abs=1e-5
    )  # the log holds the run's value
    assert (tmp_path / "resumed" / "metrics.png").stat().st_size > 1000
    # another CPU thread count is how the run executes, not what it learns: resuming with it is allowed
    from dataclasses import replace

    other_threads = replace(config, num_threads=(config.num_threads or 1) + 1)
    assert train(other_threads, tiny_dataset, tmp_path / "resumed", cache_dir=cache, show_progress=False).finished
    # a checkpoint from other settings is refused rather than silently mixed
    with pytest.raises(InputError, match="other settings"):
        train(tiny_config(strategy="totalseg", seed=4), tiny_dataset, tmp_path / "resumed", cache_dir=cache, show_progress=False)


def test_initial_weights_start_a_fine_tuning_run(tiny_dataset, tmp_path):
    from LymphNodeQuantLib.training.export import export_model
    from LymphNodeQuantLib.training.trainer import train

    cache = tmp_path / "cache"
    quiet = dict(cache_dir=cache, show_progress=False)
    first = train(tiny_config(strategy="totalseg", epochs=1), tiny_dataset, tmp_path / "first", **quiet)
    trained = torch.load(first.checkpoint, map_location="cpu", weights_only=False)["network"]
    # learning rate 0: the fine-tuning run must end exactly where its initial weights were
    for source in (first.checkpoint, export_model(first.checkpoint, tmp_path / "model", name="first")):
        frozen = tiny_config(strategy="masking", epochs=1, learning_rate=0.0, initial_weights=str(source))
        second = train(frozen, tiny_dataset, tmp_path / f"second-{Path(source).name}", **quiet)
        weights = torch.load(second.checkpoint, map_location="cpu", weights_only=False)["network"]
        assert all(torch.equal(weights[k], trained[k]) for k in trained)
    scratch = train(tiny_config(strategy="masking", epochs=1, learning_rate=0.0), tiny_dataset, tmp_path / "scratch", **quiet)
    weights = torch.load(scratch.checkpoint, map_location="cpu", weights_only=False)["network"]
    assert not all(torch.equal(weights[k], trained[k]) for k in trained)
    other = plain_unet_architecture(
        features_per_stage=(2, 4, 8), strides=((1, 1, 1), (1, 2, 2), (2, 2, 2)), kernel_sizes=((1, 3, 3), (3, 3, 3), (3, 3, 3))
    )
    with pytest.raises(InputError, match="another architecture"):
        train(tiny_config(architecture=other, initial_weights=str(first.checkpoint)), tiny_dataset, tmp_path / "bad", **quiet)


def test_export_round_trip_and_segment(tiny_dataset, tmp_path, phantom):
    from LymphNodeQuantLib.inference import segment_volume
    from LymphNodeQuantLib.models.model_folder import load_model
    from LymphNodeQuantLib.training.export import export_model
    from LymphNodeQuantLib.training.trainer import train

    config = tiny_config(strategy="dbdmp", epochs=1)
    result = train(config, tiny_dataset, tmp_path / "run", show_progress=False)
    folder = export_model(result.checkpoint, tmp_path / "model", name="tiny", metrics={"note": "test"})
    card = json.loads((folder / "model.json").read_text())
    assert len(card["weights"]["sha256"]) == 64 and card["training"]["strategy"] == "dbdmp"
    assert card["input"]["spacing_zyx_mm"] == list(TINY_SPACING) and card["provenance"]["checkpoint_sha256"]
    loaded = load_model(folder)
    state = torch.load(result.checkpoint, map_location="cpu", weights_only=False)["network"]
    assert all(torch.equal(loaded.network.state_dict()[k], state[k]) for k in state)  # main branch only
    segmentation = segment_volume(phantom.ct, model=str(folder), device="cpu")
    assert segmentation.labels.array.shape == phantom.ct.array.shape
    with pytest.raises(OutputExistsError):
        export_model(result.checkpoint, folder)
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(ModelError, match="checksum"):
        load_model(folder)


def test_cli_train_and_export(tiny_dataset, tmp_path, capsys):
    from LymphNodeQuantLib.cli import main

    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(tiny_config(epochs=1).to_dict()))
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(tiny_dataset),
                "--out",
                str(out),
                "--config",
                str(config_path),
                "--strategy",
                "coating",
                "--export",
                str(tmp_path / "model"),
            ]
        )
        == 0
    )
    assert json.loads((out / "config.json").read_text())["strategy"] == "coating"
    assert json.loads((tmp_path / "model" / "model.json").read_text())["training"]["strategy"] == "coating"
    assert main(["export", str(out), "--out", str(tmp_path / "model")]) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(out), "--out", str(tmp_path / "model"), "--overwrite", "--name", "renamed"]) == 0
    assert json.loads((tmp_path / "model" / "model.json").read_text())["name"] == "renamed"
    assert main(["train", str(tmp_path / "nowhere"), "--out", str(out)]) == 2


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="Unknown strategy"):
        tiny_config(strategy="magic")
    with pytest.raises(InputError, match="Unknown training setting"):
        TrainingConfig.from_dict({"epochz": 3})


def test_packaged_default_model_states_its_provenance(repo_root):
    from LymphNodeQuantLib.models.model_folder import DEFAULT_MODEL_NAME
    from LymphNodeQuantLib.training.config import (
        default_model_config,
        default_model_finetune_config,
        default_model_real_config,
        default_model_real_finetune_config,
    )

    folder = repo_root / "LymphNodeQuant" / "Resources" / "Models" / DEFAULT_MODEL_NAME
    card = json.loads((folder / "model.json").read_text())
    training = card["training"]
    assert "No patient annotation" in training["data"] and "implanted" in training["data"]
    assert training["command"] == "python benchmarks/train_default_model.py --overwrite"
    # the one command reproduces these settings: stages 1-2 on phantoms (kept as benchmarks/pretrained/),
    # stages 3-4 on real CTs with implanted nodes from stage 2's weights
    stage1, stage2, stage3, stage4 = training["stages"]
    # through from_dict: stages 1-2 were recorded before later settings (with their defaults) existed
    assert TrainingConfig.from_dict(stage1["config"]).to_dict() == default_model_config().to_dict()
    assert (
        TrainingConfig.from_dict(stage2["config"]).to_dict()
        == default_model_finetune_config(stage2["config"]["initial_weights"]).to_dict()
    )
    pretrained = repo_root / stage3["config"]["initial_weights"]
    assert pretrained == repo_root / "benchmarks" / "pretrained" / "lnq-phantom-unet" and (pretrained / "model.json").exists()
    expected = default_model_real_config(stage3["config"]["initial_weights"]).to_dict()
    assert {**stage3["config"], "num_threads": 0} == {**expected, "num_threads": 0}  # threads do not change the recipe
    assert stage4["config"]["initial_weights"].endswith("checkpoint_final.pt")
    expected = default_model_real_finetune_config(stage4["config"]["initial_weights"]).to_dict()
    assert {**stage4["config"], "num_threads": 0} == {**expected, "num_threads": 0}
    assert training["strategy"] == "anatomy" and training["seed"] == stage4["config"]["seed"]
    held = card["metrics"]["heldout_phantoms"]
    assert held["seeds"] == [c["seed"] for c in held["cases"]]
    assert held["dice_median"] == pytest.approx(float(np.median([c["dice"] for c in held["cases"]])))  # summary from its cases
    assert held["dice_median"] > 0.5  # the packaged model does segment phantoms (README quotes this number)
    assert (folder / "LIDC-IDRI-ATTRIBUTION.txt").read_text().count("LIDC") >= 2  # CC BY 3.0: derived from LIDC-IDRI
    assert (folder / "MODEL_CARD.md").read_text().count("|") > 10


def test_cached_maps_share_the_ct_grid_even_when_their_headers_are_rounded(tmp_path):
    """A TotalSegmentator map read from NIfTI carries float32-rounded spacing; resampled on its own it
    could land one voxel off the CT's grid (41 x 1.5 / 3.0 = 20.5 rounds either way)."""
    from LymphNodeQuantLib.training.cache import preprocess_case
    from LymphNodeQuantLib.training.dataset import TrainingCase

    ct = Volume(np.full((41, 40, 40), -100, np.int16), ImageGeometry((41, 40, 40), (1.5, 1.5, 1.5)))
    off = ImageGeometry((41, 40, 40), (1.5000001, 1.5000001, 1.5000001))
    write_volume(tmp_path / "c-ct.nrrd", ct)
    write_volume(tmp_path / "c-seg.nrrd", ct.with_array(np.zeros((41, 40, 40), np.uint8)))
    write_volume(tmp_path / "c-totalseg.nii.gz", Volume(np.ones((41, 40, 40), np.uint8), off))
    case = TrainingCase("c", tmp_path / "c-ct.nrrd", tmp_path / "c-seg.nrrd", "train", "partial", tmp_path / "c-totalseg.nii.gz")
    settings = {
        "spacing_zyx_mm": [3.0, 3.0, 3.0],
        "normalization": {"mean": 0.0, "std": 100.0},
        "crop": "none",
        "crop_margin_mm": 0.0,
    }
    arrays = preprocess_case(case, settings)
    assert arrays["image"].shape == arrays["label"].shape == arrays["totalseg"].shape == arrays["mediastinum"].shape


class _ThresholdOracle(torch.nn.Module):
    """A 'network' that reads the answer from its input: logits (-x, x), so node = image > 0."""

    def forward(self, x):
        return torch.cat([-x, x], dim=1)


def test_validation_runs_the_deployment_path_and_scores_exactly():
    """validate() = sliding_window_probability + threshold + evaluate_case: an oracle scores Dice 1,
    half of the nodes hidden from it scores the Dice of that subset, and images smaller than a patch work."""
    from LymphNodeQuantLib.training.cache import CachedCase
    from LymphNodeQuantLib.training.trainer import validate

    phantom = make_phantom((24, 40, 40), (3.0, 4.0, 4.0), seed=2, n_nodes=6)
    label = (phantom.node_labels.array > 0).astype(np.uint8)
    case = CachedCase(
        "c",
        "validation",
        "full",
        np.where(label > 0, 5.0, -5.0).astype(np.float32),
        phantom.ct.array.astype(np.int16),
        label,
        None,
        phantom.ct.geometry,
    )
    config = tiny_config(patch_size_zyx=(16, 64, 64))  # larger than the image in y and x: padded as in deployment
    assert validate(_ThresholdOracle(), [case], config, "cpu")["val_dice"] == 1.0
    hidden = phantom.node_labels.array >= 4  # the oracle misses nodes 4..6
    half = CachedCase(
        "c",
        "validation",
        "full",
        np.where((label > 0) & ~hidden, 5.0, -5.0).astype(np.float32),
        case.hu,
        label,
        None,
        phantom.ct.geometry,
    )
    found = int(((label > 0) & ~hidden).sum())
    assert 0 < found < int(label.sum())
    assert validate(_ThresholdOracle(), [half], config, "cpu")["val_dice"] == pytest.approx(
        2 * found / (found + int(label.sum()))
    )


def test_nested_settings_round_trip_and_refuse_unknown_keys():
    """Nested settings are typed: JSON keys as recorded in model cards (dbdmp 'lambda'), defaults in one place."""
    config = TrainingConfig.from_dict({"dbdmp": {"lambda": 3.0}, "augmentation": {"rotation_deg": 5.0}})
    assert config.dbdmp.pseudo_weight == 3.0 and config.dbdmp.gamma == DBDMPSettings().gamma
    assert config.augmentation.rotation_deg == 5.0 and config.augmentation.mirror_axes == (1, 2)
    document = config.to_dict()
    assert document["dbdmp"]["lambda"] == 3.0 and "pseudo_weight" not in document["dbdmp"]
    assert TrainingConfig.from_dict(document) == config
    with pytest.raises(InputError, match="Unknown DBDMPSettings setting.*'lambda'"):
        TrainingConfig.from_dict({"dbdmp": {"lamda": 3.0}})
    with pytest.raises(InputError, match="NormalizationSettings must be a JSON object"):
        TrainingConfig.from_dict({"normalization": [0, 1]})


def test_cache_fingerprint_follows_the_preprocessing_code(monkeypatch, tmp_path):
    """A change to the code that fills the cache (not only to settings or files) invalidates cached cases."""
    from LymphNodeQuantLib.training import cache
    from LymphNodeQuantLib.training.dataset import TrainingCase

    source = tmp_path / "ct.nrrd"
    source.write_bytes(b"x")
    case = TrainingCase("c", source, source)
    before = cache.case_fingerprint(case, {"spacing_zyx_mm": [3, 2, 2]})
    monkeypatch.setattr(cache, "preprocessing_code_digest", lambda: "changed code")
    assert cache.case_fingerprint(case, {"spacing_zyx_mm": [3, 2, 2]}) != before
