"""The inference engine: geometry round trip, sliding window vs MONAI, progress, cancel, OOM fallback."""

import numpy as np
import pytest
import torch

from LymphNodeQuantLib.errors import CancelledError, InputError
from LymphNodeQuantLib.inference import resolve_device, segment_volume
from LymphNodeQuantLib.models.model_folder import LoadedModel, ModelCard, save_model_folder
from LymphNodeQuantLib.models.networks import build_network, plain_unet_architecture
from LymphNodeQuantLib.progress import CancelToken
from LymphNodeQuantLib.sliding_window import WindowPredictor, sliding_window_probability, window_starts
from LymphNodeQuantLib.synthetic import make_phantom


class BrightVoxelNetwork(torch.nn.Module):
    """Two-class logits (0, gain * (x - level)): 'foreground' = normalised intensity above ``level``.

    A real, exactly predictable network: it lets tests check geometry through crop, resampling
    and blending without trained weights.
    """

    def __init__(self, level: float, gain: float = 20.0):
        super().__init__()
        self.level, self.gain = level, gain

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), self.gain * (x - self.level)], dim=1)


def bright_card(spacing=(3.0, 3.5, 3.5), crop="none", patch=(16, 32, 32)):
    data = {
        "name": "bright-voxels",
        "version": "1",
        "architecture": {"name": "test-only", "arguments": {}},
        "input": {
            "spacing_zyx_mm": list(spacing),
            "normalization": {"clip_hu": [-1000, 1000], "mean": 0.0, "std": 100.0},
            "patch_size_zyx": list(patch),
            "crop": crop,
        },
        "labels": [],
        # the mechanics tests below look at every candidate; test_anatomy_filter_* turns the filter on
        "postprocessing": {"threshold": 0.5, "min_node_volume_mm3": 0.0, "min_node_voxels": 1, "anatomy_filter": False},
        "weights": {"file": "-", "sha256": "-", "size_bytes": 0},
    }
    return ModelCard.from_dict(data)


@pytest.fixture(scope="module")
def phantom():
    return make_phantom((40, 96, 96), (3.0, 3.5, 3.5), seed=3)


def test_geometry_round_trip_with_exact_network(phantom):
    # bone-bright voxels (> 300 HU) found through crop-free pipeline at a different spacing
    model = LoadedModel(bright_card(spacing=(3.0, 2.5, 2.5)), BrightVoxelNetwork(level=3.0), "cpu")
    result = segment_volume(phantom.ct, model, "cpu", output="binary", min_node_volume_mm3=0)
    assert result.labels.geometry.same_grid(phantom.ct.geometry)
    assert result.labels.array.dtype == np.uint8
    expected = phantom.ct.array > 300
    agreement = np.logical_and(expected, result.labels.array).sum() * 2 / (expected.sum() + result.labels.array.sum())
    assert agreement > 0.85, agreement


def test_crop_keeps_result_inside_box_and_grid(phantom):
    model = LoadedModel(bright_card(crop="mediastinum"), BrightVoxelNetwork(level=0.0), "cpu")
    result = segment_volume(phantom.ct, model, "cpu", min_node_volume_mm3=0)
    (z0, y0, x0), (z1, y1, x1) = result.crop_box_zyx
    assert (y1 - y0) < 96 or (x1 - x0) < 96
    outside = result.labels.array.copy()
    outside[z0:z1, y0:y1, x0:x1] = 0
    assert not outside.any()
    inside = phantom.ct.array[z0:z1, y0:y1, x0:x1] > 0
    assert np.array_equal(result.labels.array[z0:z1, y0:y1, x0:x1] > 0, inside)  # same spacing: exact
    uncropped = segment_volume(phantom.ct, model, "cpu", crop_to_mediastinum=False, min_node_volume_mm3=0)
    assert uncropped.crop_box_zyx == ((0, 0, 0), phantom.ct.array.shape)
    assert np.array_equal(uncropped.labels.array > 0, phantom.ct.array > 0)


def test_instances_numbered_and_small_ones_dropped(phantom):
    model = LoadedModel(bright_card(), BrightVoxelNetwork(level=3.0), "cpu")
    everything = segment_volume(phantom.ct, model, "cpu", min_node_volume_mm3=0)
    filtered = segment_volume(phantom.ct, model, "cpu", min_node_volume_mm3=500)
    ids = np.unique(everything.labels.array)
    assert (
        everything.labels.array.dtype == np.uint16 and ids[0] == 0 and list(ids[1:]) == list(range(1, everything.node_count + 1))
    )
    assert 0 < filtered.node_count < everything.node_count
    for node in range(1, filtered.node_count + 1):
        assert (filtered.labels.array == node).sum() * phantom.ct.geometry.voxel_volume_mm3 >= 500


def test_anatomy_filter_drops_bone_and_keeps_only_mediastinal_soft_tissue(phantom):
    bright = LoadedModel(bright_card(crop="mediastinum"), BrightVoxelNetwork(level=3.0), "cpu")  # > 300 HU: bone, contrast
    result = segment_volume(phantom.ct, bright, "cpu", anatomy_filter=True)
    unfiltered = segment_volume(phantom.ct, bright, "cpu")
    assert unfiltered.node_count > 0 and result.node_count == 0
    assert result.dropped_candidates["bone_or_contrast"] > 0
    assert sum(result.dropped_candidates.values()) == unfiltered.node_count
    assert "bone or contrast" in result.messages[-1] and "anatomy filter on" in result.messages[-1]
    soft = LoadedModel(bright_card(crop="mediastinum"), BrightVoxelNetwork(level=0.0), "cpu")  # > 0 HU
    kept = segment_volume(phantom.ct, soft, "cpu", anatomy_filter=True)
    from LymphNodeQuantLib.anatomy import find_chest_anatomy

    inside = find_chest_anatomy(phantom.ct).mediastinum_in_box((0, 0, 0), phantom.ct.geometry.shape_zyx)
    labels, hu = kept.labels.array, phantom.ct.array
    for node in range(1, kept.node_count + 1):
        assert inside[labels == node].mean() >= 0.5 and -300 <= np.median(hu[labels == node]) <= 200
    assert kept.dropped_candidates["outside_mediastinum"] > 0  # the chest wall muscle


def test_a_scan_without_mediastinum_is_not_segmented(shared_data):
    from LymphNodeQuantLib.io import read_volume

    abdomen = read_volume(shared_data / "totalseg-example" / "example_ct_sm.nii.gz")
    soft = LoadedModel(bright_card(crop="mediastinum"), BrightVoxelNetwork(level=0.0), "cpu")
    result = segment_volume(abdomen, soft, "cpu", anatomy_filter=True)
    assert result.node_count == 0 and not result.labels.array.any() and result.has_mediastinum is False
    assert any("No mediastinum in this scan" in m for m in result.messages)
    assert "--no-anatomy-filter" in result.messages[-1]
    anyway = segment_volume(abdomen, soft, "cpu", anatomy_filter=False)
    assert anyway.node_count > 0


def test_sliding_window_matches_monai():
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    network = build_network(
        plain_unet_architecture(features_per_stage=(4, 8), strides=((1, 1, 1), (2, 2, 2)), kernel_sizes=((3, 3, 3),) * 2)
    ).eval()
    image = np.random.default_rng(0).normal(size=(21, 45, 50)).astype(np.float32)
    patch = (8, 16, 16)
    ours = sliding_window_probability(image, WindowPredictor(network, "cpu", batch_size=3), patch, overlap=0.5)
    with torch.no_grad():
        theirs = sliding_window_inference(
            torch.from_numpy(image)[None, None],
            patch,
            3,
            lambda x: torch.softmax(network(x), 1)[:, 1:2],
            overlap=0.5,
            mode="gaussian",
        )[0, 0].numpy()
    assert np.abs(ours - theirs).max() < 1e-5


def test_window_starts_cover_axis():
    assert window_starts(10, 16, 0.5) == [0]
    assert window_starts(40, 16, 0.5) == [0, 8, 16, 24]
    starts = window_starts(45, 16, 0.25)
    assert starts[0] == 0 and starts[-1] == 29 and all(b - a <= 12 for a, b in zip(starts, starts[1:]))


def test_tta_of_symmetric_network_changes_nothing(phantom):
    model = LoadedModel(bright_card(), BrightVoxelNetwork(level=3.0), "cpu")
    plain = segment_volume(phantom.ct, model, "cpu", min_node_volume_mm3=0)
    mirrored = segment_volume(phantom.ct, model, "cpu", min_node_volume_mm3=0, tta=True, overlap=0.25)
    assert np.array_equal(plain.labels.array > 0, mirrored.labels.array > 0)


def test_progress_and_cancel(phantom):
    model = LoadedModel(bright_card(), BrightVoxelNetwork(level=3.0), "cpu")
    events = []
    segment_volume(phantom.ct, model, "cpu", progress=lambda f, s: events.append((f, s)))
    fractions = [f for f, _ in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and fractions[0] == 0.0
    assert "inference" in {s for _, s in events}

    token = CancelToken()

    def cancel_midway(fraction, stage):
        if stage == "inference":
            token.cancel()

    with pytest.raises(CancelledError):
        segment_volume(phantom.ct, model, "cpu", progress=cancel_midway, cancel=token)


class OutOfMemoryNetwork(torch.nn.Module):
    """Fault injection: raises CUDA out-of-memory for batches over ``max_batch`` or on a non-CPU device."""

    def __init__(self, inner, max_batch=1, fail_off_cpu=False):
        super().__init__()
        self.inner, self.max_batch, self.fail_off_cpu = inner, max_batch, fail_off_cpu
        self.batch_sizes = []

    def forward(self, x):
        if x.shape[0] > self.max_batch or (self.fail_off_cpu and x.device.type != "cpu"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.batch_sizes.append(x.shape[0])
        return self.inner(x)


def test_out_of_memory_halves_batch_then_moves_to_cpu():
    from LymphNodeQuantLib.log import collected_messages

    image = np.random.default_rng(1).normal(size=(20, 40, 40)).astype(np.float32)
    reference = sliding_window_probability(image, WindowPredictor(BrightVoxelNetwork(0.0), "cpu", batch_size=4), (8, 16, 16))

    network = OutOfMemoryNetwork(BrightVoxelNetwork(0.0), max_batch=1)
    predictor = WindowPredictor(network, "cpu", batch_size=4)
    with collected_messages() as messages:
        result = sliding_window_probability(image, predictor, (8, 16, 16))
    assert np.allclose(result, reference) and predictor.batch_size == 1 and set(network.batch_sizes) == {1}
    assert [m.split(":")[0] for m in messages] == ["Out of memory on cpu"] * 2

    # an accelerator that always runs out of memory: the 'meta' device stands in for the GPU
    network = OutOfMemoryNetwork(BrightVoxelNetwork(0.0), max_batch=8, fail_off_cpu=True)
    predictor = WindowPredictor(network, "meta", batch_size=2)
    with collected_messages() as messages:
        result = sliding_window_probability(image, predictor, (8, 16, 16))
    assert np.allclose(result, reference) and predictor.device.type == "cpu"
    assert "continuing on the CPU" in messages[-1]


def test_non_oom_errors_are_not_swallowed():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        sliding_window_probability(np.zeros((8, 16, 16), np.float32), WindowPredictor(Broken(), "cpu"), (8, 16, 16))


def test_saved_random_model_runs_end_to_end(phantom, tmp_path):
    torch.manual_seed(0)
    architecture = plain_unet_architecture(
        features_per_stage=(4, 8), strides=((1, 1, 1), (2, 2, 2)), kernel_sizes=((3, 3, 3),) * 2
    )
    card = {
        "name": "tiny-random",
        "version": "0",
        "architecture": architecture,
        "input": {
            "spacing_zyx_mm": [3, 3, 3],
            "normalization": {"clip_hu": [-150, 350], "mean": 40, "std": 80},
            "patch_size_zyx": [16, 32, 32],
        },
    }
    folder = save_model_folder(tmp_path / "tiny", build_network(architecture), card)
    result = segment_volume(phantom.ct, str(folder), "auto")
    assert result.device == "cpu" and result.model_card.name == "tiny-random"
    assert result.labels.geometry.same_grid(phantom.ct.geometry)
    assert result.labels.array.max() == result.node_count


def test_bad_inputs(phantom):
    model = LoadedModel(bright_card(), BrightVoxelNetwork(level=3.0), "cpu")
    mr = phantom.ct.with_array(np.random.default_rng(0).uniform(0, 4000, phantom.ct.array.shape).astype(np.float32))
    with pytest.raises(InputError, match="do not look like CT"):
        segment_volume(mr, model, "cpu")
    with pytest.raises(InputError, match="output must be"):
        segment_volume(phantom.ct, model, "cpu", output="probabilities")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(InputError, match="Unknown device"):
        resolve_device("tpu")


class _ShiftRight(torch.nn.Module):
    """A one-channel 'network' that is not mirror-symmetric: its logit at x is the input at x - 1."""

    def forward(self, x):
        return torch.roll(x, shifts=1, dims=-1)


def test_tta_averages_the_mirrored_predictions_of_an_asymmetric_network():
    image = np.random.default_rng(4).normal(size=(8, 16, 16)).astype(np.float32)  # exactly one window
    predictor = WindowPredictor(_ShiftRight(), "cpu")
    plain = sliding_window_probability(image, predictor, image.shape)
    mirrored = sliding_window_probability(image, predictor, image.shape, tta=True)
    sigmoid = lambda a: 1.0 / (1.0 + np.exp(-a))  # noqa: E731
    right, left = sigmoid(np.roll(image, 1, axis=-1)), sigmoid(np.roll(image, -1, axis=-1))
    np.testing.assert_allclose(plain, right, atol=1e-6)
    # half of the 8 passes flip x, so the shift runs the other way in them; flips of z and y change nothing here
    np.testing.assert_allclose(mirrored, (right + left) / 2, atol=1e-6)
    assert np.abs(mirrored - plain).max() > 0.1


@pytest.mark.filterwarnings("ignore:CUDA is not available")  # the autocast object is only inspected
def test_autocast_choice_per_device_and_setting(monkeypatch):
    """The mixed-precision logic, checked on a CPU-only machine: bf16 where the GPU has it, else fp16, never on CPU."""
    import contextlib

    predictor = WindowPredictor(_ShiftRight(), "cpu")
    assert isinstance(predictor._autocast(), contextlib.nullcontext)  # CPU: full precision
    predictor.device = torch.device("cuda")  # only the choice is tested; nothing runs on it
    for supported, expected in ((True, torch.bfloat16), (False, torch.float16)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        context = predictor._autocast()
        assert isinstance(context, torch.autocast) and context.fast_dtype == expected
    predictor.mixed_precision = "fp16"
    assert predictor._autocast().fast_dtype == torch.float16
    predictor.mixed_precision = "fp32"
    assert isinstance(predictor._autocast(), contextlib.nullcontext)


class _PointwiseNetwork(torch.nn.Module):
    """Two-class logits from each voxel alone, so padding placement cannot change the inner voxels."""

    def forward(self, x):
        return torch.cat([torch.zeros_like(x), 2.0 * x - 0.5], dim=1)


def test_image_smaller_than_a_patch_agrees_with_monai_padding():
    from monai.inferers import sliding_window_inference

    image = np.random.default_rng(1).normal(size=(5, 30, 12)).astype(np.float32)  # smaller than the patch on z and x
    patch = (8, 16, 16)
    network = _PointwiseNetwork()
    ours = sliding_window_probability(image, WindowPredictor(network, "cpu"), patch, overlap=0.5, pad_value=-3.0)
    with torch.no_grad():
        theirs = sliding_window_inference(
            torch.from_numpy(image)[None, None],
            patch,
            2,
            lambda x: torch.softmax(network(x), 1)[:, 1:2],
            overlap=0.5,
            mode="gaussian",
            padding_mode="constant",
            cval=-3.0,
        )[0, 0].numpy()
    assert ours.shape == image.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_slab_wise_resample_and_threshold_equals_whole_volume():
    import SimpleITK as sitk

    from LymphNodeQuantLib.geometry import ImageGeometry, Volume
    from LymphNodeQuantLib.inference import probability_to_mask
    from LymphNodeQuantLib.preprocessing import resampled_geometry

    rng = np.random.default_rng(2)
    probability = Volume(
        rng.random((12, 20, 18)).astype(np.float32), ImageGeometry((12, 20, 18), (3.0, 2.0, 2.5), (5.0, -3.0, 7.0))
    )
    target = resampled_geometry(probability.geometry, (1.1, 0.9, 1.3))
    slab_wise = probability_to_mask(probability, target, 0.5, slab_slices=5)  # several slabs and a short last one
    reference = sitk.Image([int(v) for v in reversed(target.shape_zyx)], sitk.sitkFloat32)
    target.apply_to_sitk(reference)
    whole = sitk.GetArrayFromImage(sitk.Resample(probability.to_sitk(), reference, sitk.Transform(), sitk.sitkLinear, 0.0))
    assert target.shape_zyx[0] % 5 != 0
    np.testing.assert_array_equal(slab_wise, (whole > 0.5).astype(np.uint8))
