"""The training loop: patches -> network -> loss, poly learning rate, checkpoints, validation.

* One iteration's batch is a pure function of (seed, rank, iteration) (see :mod:`.augmentation`),
  so a run resumed from ``checkpoint_latest.pt`` continues exactly as if never interrupted.
* A checkpoint is written after every epoch (model, optimiser, scheduler, grad scaler, torch RNG,
  epoch, metrics log, config), atomically, by rank 0 only.
* Validation: sliding-window inference (MONAI) on the fully labelled validation cases at model
  spacing, scored with :func:`LymphNodeQuantLib.evaluate.evaluate_case` (Dice, ASSD).
* Mixed precision (float16 autocast + GradScaler) on CUDA; full precision on CPU.
* Multi-GPU / multi-node: launched with ``torchrun``, wrapped in DistributedDataParallel.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..errors import InputError
from ..geometry import Volume
from . import distributed
from .augmentation import PatchAugmenter
from .cache import IGNORE, CachedCase, build_cache
from .config import TrainingConfig
from .dataset import find_cases
from .plots import plot_metrics, write_metrics_csv
from .sampling import PatchSampler
from .strategies import build_target

logger = logging.getLogger(__name__)

CHECKPOINT_LATEST = "checkpoint_latest.pt"
CHECKPOINT_FINAL = "checkpoint_final.pt"


@dataclass
class TrainingResult:
    output_dir: Path
    checkpoint: Path
    epochs_completed: int
    metrics: list = field(default_factory=list)
    finished: bool = False


def _batch_seed(seed: int, rank: int, iteration: int) -> int:
    return int(np.random.SeedSequence([seed, rank, iteration]).generate_state(1)[0])


def make_batch(sampler: PatchSampler, augmenter: PatchAugmenter, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(batch_size):
        image, target = sampler.sample(rng, augmenter.input_size(), augmenter.patch_size)
        image, target = augmenter(image, target, int(rng.integers(2**31)))
        images.append(image)
        targets.append(target)
    return torch.from_numpy(np.stack(images)[:, None]), torch.from_numpy(np.stack(targets).astype(np.int64))


def build_model(config: TrainingConfig) -> torch.nn.Module:
    from ..models.networks import build_network

    torch.manual_seed(config.seed)
    network = build_network(config.architecture)
    if config.strategy == "dbdmp":
        from .dbdmp import DualBranchUNet

        return DualBranchUNet(network, aux_dropout=config.dbdmp.aux_dropout)
    return network


def main_network(model: torch.nn.Module) -> torch.nn.Module:
    """The single-decoder PlainConvUNet inside ``model`` (unwrapping DDP and the dual branch)."""
    model = getattr(model, "module", model)
    return getattr(model, "network", model)


def load_initial_weights(network: torch.nn.Module, source: str, architecture: dict) -> None:
    """Copy the weights of ``source`` (a checkpoint or run folder, or a model folder) into ``network``.

    The source's architecture must equal ``architecture``; anything else is an :class:`InputError`.
    """
    from ..models.model_folder import MODEL_CARD_NAME, load_model
    from .export import load_checkpoint

    path = Path(source)
    if path.is_dir() and (path / MODEL_CARD_NAME).is_file():
        loaded = load_model(path)  # checksum verified
        source_architecture, state = loaded.card.architecture, loaded.network.state_dict()
    else:
        checkpoint = load_checkpoint(path)
        source_architecture, state = checkpoint["architecture"], checkpoint["network"]

    def as_json(value):  # tuples and lists compare equal
        return json.loads(json.dumps(value))

    if as_json(source_architecture) != as_json(architecture):
        raise InputError(
            f"initial_weights '{source}' were trained with another architecture "
            f"({source_architecture.get('arguments', {}).get('features_per_stage')} features per stage, "
            f"here {architecture.get('arguments', {}).get('features_per_stage')}); use matching settings."
        )
    network.load_state_dict(state, strict=True)


def _make_optimizer(model, config: TrainingConfig):
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.learning_rate, momentum=0.99, nesterov=True, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)


def compute_loss(model, images, targets, config: TrainingConfig, iteration: int) -> tuple[torch.Tensor, dict]:
    """Loss of one batch for the config's strategy."""
    from .losses import dice_ce_loss

    if config.strategy == "dbdmp":
        from .dbdmp import dbdmp_loss

        main, aux = model(images)
        beta = float(np.random.default_rng(_batch_seed(config.seed, 10**6, iteration)).random())
        return dbdmp_loss(main, aux, targets, iteration / max(config.total_iterations - 1, 1), config.dbdmp, beta)
    logits = model(images)
    loss = dice_ce_loss(logits, targets)
    return loss, {}


def predict_case(network, image: np.ndarray, config: TrainingConfig, device: str) -> np.ndarray:
    """Node probability on a preprocessed image through the deployment's sliding window
    (:func:`..sliding_window.sliding_window_probability`: same placement, blending and padding as
    ``lnq segment``), so the validation Dice in model.json comes from the path that ships."""
    from ..sliding_window import WindowPredictor, sliding_window_probability

    network.eval()
    predictor = WindowPredictor(network, device, batch_size=2)
    return sliding_window_probability(
        image, predictor, config.patch_size_zyx, overlap=config.sliding_window_overlap, pad_value=float(image.min())
    )


def validate(network, cases: list[CachedCase], config: TrainingConfig, device: str) -> dict:
    """Median Dice and ASSD over the validation cases (prediction threshold 0.5, model spacing)."""
    from ..evaluate import evaluate_case

    dices, assds = [], []
    for case in cases:
        probability = predict_case(network, case.image, config, device)
        prediction = Volume((probability > 0.5).astype(np.uint8), case.geometry)
        result = evaluate_case(prediction, case.label_volume(), detection=False, case_id=case.case_id)
        dices.append(result.dice)
        assds.append(result.assd_mm)
    network.train()
    finite = [a for a in assds if not math.isnan(a)]
    return {
        "val_dice": float(np.median(dices)) if dices else None,
        "val_assd_mm": float(np.median(finite)) if finite else (float("nan") if dices else None),
    }


def _save_checkpoint(path: Path, state: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


def train(
    config: TrainingConfig,
    dataset_dir: Path,
    output_dir: Path,
    *,
    cache_dir: Optional[Path] = None,
    totalseg_dir: Optional[Path] = None,
    resume: bool = True,
    device: str = "auto",
    show_progress: bool = True,
    stop_after_epochs: Optional[int] = None,
) -> TrainingResult:
    """Train per ``config`` on the dataset; checkpoints, metrics.csv and metrics.png go to ``output_dir``.

    ``resume``: continue from ``output_dir/checkpoint_latest.pt`` when present (its config must
    match). ``stop_after_epochs``: stop early after that many epochs in total (as an interruption
    would; a later call resumes). Progress is logged (logger ``LymphNodeQuantLib.training``) by rank 0.
    """
    context = distributed.setup(device)
    try:
        return _train(
            config,
            Path(dataset_dir),
            Path(output_dir),
            cache_dir,
            totalseg_dir,
            resume,
            context,
            show_progress,
            stop_after_epochs,
        )
    finally:
        context.close()


@dataclass
class _Run:
    """What one training run holds between epochs."""

    model: torch.nn.Module
    train_model: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    use_amp: bool
    metrics: list = field(default_factory=list)
    start_epoch: int = 0


def _train(config, dataset_dir, output_dir, cache_dir, totalseg_dir, resume, context, show_progress, stop_after_epochs):
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    main_log = logger.info if context.is_main else (lambda _message: None)
    output_dir.mkdir(parents=True, exist_ok=True)
    training_cases, validation_cases, sampler, augmenter = _prepare_data(
        config, dataset_dir, Path(cache_dir) if cache_dir else output_dir / "cache", totalseg_dir, context, main_log
    )
    latest = output_dir / CHECKPOINT_LATEST
    run = _start_run(config, context, latest, resume, main_log)
    last_epoch = config.epochs if stop_after_epochs is None else min(config.epochs, stop_after_epochs)
    for epoch in range(run.start_epoch, last_epoch):
        started = time.time()
        losses = _run_epoch(run, config, epoch, sampler, augmenter, context, show_progress)
        row = {
            "epoch": epoch + 1,
            "iterations": (epoch + 1) * config.iterations_per_epoch,
            "train_loss": context.mean(float(np.mean(losses))),
            "learning_rate": run.scheduler.get_last_lr()[0],
            "val_dice": None,
            "val_assd_mm": None,
        }
        if context.is_main:
            _end_epoch(run, config, epoch, row, validation_cases, started, latest, output_dir, context.device, main_log)
        else:
            run.metrics.append(row)
        context.barrier()
    finished = last_epoch == config.epochs
    final = output_dir / CHECKPOINT_FINAL
    if finished and context.is_main and latest.exists():
        state = torch.load(latest, map_location="cpu", weights_only=False)
        _save_checkpoint(final, {k: state[k] for k in ("config", "epoch", "metrics", "network", "architecture")})
    context.barrier()
    return TrainingResult(output_dir, final if finished else latest, last_epoch, run.metrics, finished)


def _prepare_data(config, dataset_dir, cache_dir, totalseg_dir, context, main_log):
    """Cached cases (rank 0 builds the cache, the others wait and read it), targets, patch sampler, augmenter."""
    cases = find_cases(dataset_dir, totalseg_dir)
    settings = config.preprocessing_settings()
    if context.is_main:
        cached = build_cache(cases, cache_dir, settings, verbose=True)
    context.barrier()
    if not context.is_main:
        cached = build_cache(cases, cache_dir, settings)
    training_cases = [c for c in cached if c.split == "train"]
    validation_cases = [c for c in cached if c.split == "validation"]
    if not training_cases:
        raise InputError(f"No training cases in '{dataset_dir}' (all are flagged 'validation' in its manifest).")
    targets = [build_target(c, config) for c in training_cases]
    if not any((t == 1).any() for t in targets):
        raise InputError("No training case has a labelled lymph node (label 1); nothing to learn from.")
    sampler = PatchSampler([c.image for c in training_cases], targets, config.foreground_fraction, seed=config.seed)
    augmenter = PatchAugmenter(config.patch_size_zyx, config.augmentation)
    main_log(
        f"{len(training_cases)} training / {len(validation_cases)} validation cases; strategy '{config.strategy}'; "
        f"known voxels {np.mean([float((t != IGNORE).mean()) for t in targets]):.1%}"
    )
    return training_cases, validation_cases, sampler, augmenter


def _settings_that_shape_the_result(config: TrainingConfig) -> dict:
    settings = config.to_dict()
    settings.pop("num_threads", None)
    return settings


def _start_run(config, context, latest: Path, resume: bool, main_log) -> _Run:
    """Model, optimiser, poly schedule and AMP scaler, resumed from ``latest`` or initialised (optionally from weights)."""
    device = context.device
    model = build_model(config).to(device)
    optimizer = _make_optimizer(model, config)
    total = config.total_iterations
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: (1.0 - min(it, total) / total) ** config.poly_exponent)
    use_amp = bool(config.mixed_precision and device.startswith("cuda"))
    run = _Run(model, model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=use_amp), use_amp)
    if resume and latest.exists():
        state = torch.load(latest, map_location=device, weights_only=False)
        # through from_dict, so a checkpoint written before a setting existed compares with its default;
        # the CPU thread count is how a run executes, not what it learns, so a resume may change it
        if _settings_that_shape_the_result(TrainingConfig.from_dict(state["config"])) != _settings_that_shape_the_result(config):
            raise InputError(f"'{latest}' was written with other settings; use a new output folder or --no-resume.")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        run.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        run.metrics, run.start_epoch = list(state["metrics"]), int(state["epoch"]) + 1
        main_log(f"Resuming after epoch {run.start_epoch} from {latest}")
    else:
        if not resume and latest.exists() and context.is_main:
            latest.unlink()
        if config.initial_weights:
            load_initial_weights(main_network(model), config.initial_weights, config.architecture)
            main_log(f"Starting from the weights of {config.initial_weights}")
    if context.enabled:
        run.train_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[context.local_rank] if device.startswith("cuda") else None
        )
    run.train_model.train()
    return run


def _run_epoch(run: _Run, config, epoch: int, sampler, augmenter, context, show_progress: bool) -> list[float]:
    """One epoch of optimisation steps; each batch is a pure function of (seed, rank, iteration)."""
    losses = []
    iterations = range(epoch * config.iterations_per_epoch, (epoch + 1) * config.iterations_per_epoch)
    bar = None
    if show_progress and context.is_main:
        from tqdm import tqdm

        bar = tqdm(total=len(iterations), desc=f"epoch {epoch + 1}/{config.epochs}", leave=False, mininterval=2.0)
    for iteration in iterations:
        images, batch_targets = make_batch(
            sampler, augmenter, config.batch_size, _batch_seed(config.seed, context.rank, iteration)
        )
        images, batch_targets = images.to(context.device), batch_targets.to(context.device)
        run.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda", dtype=torch.float16, enabled=run.use_amp):
            loss, _parts = compute_loss(run.train_model, images, batch_targets, config, iteration)
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), 12.0)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.scheduler.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    if bar is not None:
        bar.close()
    return losses


def _end_epoch(
    run: _Run,
    config,
    epoch: int,
    row: dict,
    validation_cases,
    started: float,
    latest: Path,
    output_dir: Path,
    device: str,
    main_log,
) -> None:
    """Rank 0: validate when due, then write the checkpoint, metrics.csv and metrics.png, and log the epoch."""
    if validation_cases and ((epoch + 1) % max(config.validate_every, 1) == 0 or epoch + 1 == config.epochs):
        row.update(validate(main_network(run.model), validation_cases, config, device))
    row["seconds"] = round(time.time() - started, 2)
    run.metrics.append(row)
    _save_checkpoint(
        latest,
        {
            "config": config.to_dict(),
            "epoch": epoch,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "metrics": run.metrics,
            "network": main_network(run.model).state_dict(),
            "architecture": config.architecture,
        },
    )
    write_metrics_csv(output_dir / "metrics.csv", run.metrics)
    plot_metrics(output_dir / "metrics.png", run.metrics, title=f"strategy {config.strategy}")
    dice = "" if row["val_dice"] is None else f", val Dice {row['val_dice']:.3f}, ASSD {row['val_assd_mm']:.2f} mm"
    main_log(f"epoch {epoch + 1}/{config.epochs}: loss {row['train_loss']:.4f}{dice} ({row['seconds']:.0f} s)")
