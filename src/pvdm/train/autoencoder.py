"""Autoencoder training (PVDM stage 1): phase 1 (L1 + LPIPS), phase 2 (+ 2D/3D PatchGAN).

One plain loop. Each pass: report, evaluate, save snapshot and training state, stop if done,
then train one step. A step is one optimizer update of the autoencoder over `grad_accum`
micro-batches; when the discriminators are on, the same micro-batches also update them (on the
reconstructions detached), as in taming-transformers. The official trainer instead alternates
whole accumulation windows of generator and discriminator updates on different batches.

Resume: re-run the same command on the same output folder. Randomness derives from
(seed, rank, step) and the data position from the step, so a resumed run ends bit-identical to
an uninterrupted one on the CPU.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pvdm.data import (
    DataConfig,
    make_loader,
    open_dataset,
    split_clips,
    to_model_range,
)
from pvdm.errors import ConfigError, PvdmError
from pvdm.metrics.recon import psnr, reconstruct
from pvdm.models import load_model
from pvdm.models.autoencoder import AutoencoderConfig, TriplaneAutoencoder
from pvdm.runs import RunFolder
from pvdm.runtime import (
    DistInfo,
    all_reduce_sum,
    any_rank,
    autocast,
    init_distributed,
    local_batch_size,
)
from pvdm.seeds import step_seed
from pvdm.train.ae_loss import AutoencoderLoss, AutoencoderLossConfig, PreTanhProbe
from pvdm.train.checkpoint import (
    TrainingState,
    load_latest_training_state,
    load_training_state,
    save_named_training_state,
    save_training_state,
)
from pvdm.train.common import (
    GuardedUpdate,
    make_scaler,
    no_sync_unless,
    prepare_run,
    scheduled_lr,
    set_lr,
)
from pvdm.train.config import TrainConfig
from pvdm.train.ema import EMA
from pvdm.train.interrupt import StopRequest
from pvdm.train.monitor import Monitor
from pvdm.train.snapshots import save_preview, save_snapshot

log = logging.getLogger(__name__)


@dataclass
class AutoencoderRunConfig:
    """Everything one autoencoder training run needs."""

    model: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)

    def validate(self) -> None:
        if (self.data.resolution, self.data.frames) != (self.model.resolution, self.model.frames):
            raise ConfigError(
                f"data.resolution/frames ({self.data.resolution}, {self.data.frames}) must equal "
                f"model.resolution/frames ({self.model.resolution}, {self.model.frames})"
            )


def build_lpips(cfg: AutoencoderLossConfig) -> torch.nn.Module | None:
    """The frozen LPIPS network, or None when the perceptual term is off."""
    if cfg.perceptual_weight <= 0:
        return None
    from pvdm.models.lpips import LPIPS

    return LPIPS.from_files(cfg.vgg_weights, cfg.lpips_weights)


def build_i3d_features(cfg: AutoencoderLossConfig) -> torch.nn.Module | None:
    """The frozen early I3D layers of the `i3d_weight` term, or None when it is off."""
    if cfg.i3d_weight <= 0:
        return None
    from pvdm.train.ae_loss import I3DFeatures

    return I3DFeatures.from_file(cfg.i3d_weights, cfg.i3d_layer)


@torch.no_grad()
def heldout_psnr(
    model: torch.nn.Module, clips: torch.Tensor, info: DistInfo, precision: str, batch_size: int = 4
) -> float:
    """Mean PSNR (official formula, [0, 1] scale) of reconstructions of fixed uint8 clips, each
    rank reconstructing its share."""
    shard = clips[info.rank :: info.world_size]
    total = torch.zeros(2, dtype=torch.float64, device=info.device)
    if len(shard):
        x_hat = reconstruct(model, shard, batch_size=batch_size, precision=precision)
        per_video = psnr(to_model_range(shard.to(x_hat.device)), x_hat, reduction="none")
        total[0], total[1] = per_video.clamp(max=100.0).sum(), len(shard)
    all_reduce_sum(total)
    return float(total[0] / total[1])


def train_autoencoder(
    cfg: AutoencoderRunConfig, outdir: str | Path, init: str | None = None, restart: bool = False
) -> Path:
    """Train (or resume) an autoencoder in `outdir`; returns the run folder.

    `restart` starts from step 0 when every saved training state is unreadable (else an error).
    """
    info = init_distributed(cfg.train.device)
    run = RunFolder(outdir)
    prepare_run(run, cfg, info)
    tc = cfg.train
    device = info.device
    local_batch = local_batch_size(tc.batch_size, info.world_size)

    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    model = TriplaneAutoencoder(cfg.model).to(device)
    loss_fn = AutoencoderLoss(cfg.loss, build_lpips(cfg.loss), build_i3d_features(cfg.loss)).to(
        device
    )
    pre_tanh = PreTanhProbe(model, cfg.loss)
    opt = torch.optim.AdamW(
        model.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    discs = loss_fn.discriminators
    d_opt = torch.optim.AdamW(
        discs.parameters(), lr=cfg.loss.disc_lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    scaler, d_scaler = make_scaler(tc.precision, device), make_scaler(tc.precision, device)
    ema = EMA(model, tc.ema_decay, tc.ema_every) if tc.use_ema else None
    guard = PsnrGuard(cfg.loss)

    training_state = TrainingState(
        cfg,
        model=model,
        discriminators=discs,
        optimizer=opt,
        d_optimizer=d_opt,
        scaler=scaler,
        d_scaler=d_scaler,
        ema=ema,
        guard=guard,
    )

    state = load_latest_training_state(run, restart=restart)
    if state is not None:
        step = training_state.restore(state)
    else:
        step = 0
        if init:
            _init_weights(model, init)
            if ema:
                ema.model.load_state_dict(model.state_dict())
    start_step = step

    train_model: torch.nn.Module = model
    train_discs: torch.nn.Module = discs
    if info.distributed:
        device_ids = [device] if device.type == "cuda" else None
        if device.type == "cuda":  # SyncBatchNorm needs GPUs; it is plain BatchNorm elsewhere
            loss_fn.discriminators = discs = torch.nn.SyncBatchNorm.convert_sync_batchnorm(discs)
            training_state.parts["discriminators"] = discs  # save the converted module
        train_model = DDP(model, device_ids=device_ids)
        train_discs = DDP(discs, device_ids=device_ids)

    dataset = open_dataset(cfg.data)
    purpose = "the held-out PSNR guard (and snapshots/best)"
    heldout, _ = split_clips(cfg.data, "test", cfg.loss.guard_clips, tc.seed, purpose=purpose)
    loader = iter(
        make_loader(
            dataset,
            batch_size=local_batch,
            seed=tc.seed,
            start_batch=step * tc.grad_accum,
            rank=info.rank,
            world_size=info.world_size,
            num_workers=cfg.data.num_workers,
        )
    )
    monitor = Monitor(
        run.stats if info.is_main else None,
        start_step=step,
        max_steps=tc.max_steps,
        device=device,
        tensorboard_dir=run.tensorboard if (info.is_main and tc.tensorboard) else None,
        desc="autoencoder",
    )
    params = list(model.parameters())
    hint = "lower train.lr or use train.precision=fp32"
    update = GuardedUpdate(tc.max_nonfinite, run.checkpoints, hint)
    d_update = GuardedUpdate(tc.max_nonfinite, run.checkpoints, hint, what="discriminator")
    eval_every = tc.eval_every or tc.checkpoint_every
    log.info(
        "training the autoencoder from step %d to %d on %s (%d process(es), batch %d x %d accum)",
        step, tc.max_steps, device, info.world_size, tc.batch_size, tc.grad_accum,
    )  # fmt: skip

    with StopRequest() as stop:
        while True:
            done = step >= tc.max_steps
            stopping = any_rank(stop.requested)

            # report
            if step > monitor.last_step and (step % tc.log_every == 0 or done or stopping):
                monitor.report(step)

            # evaluate on held-out clips; keep the best snapshot; act on divergence
            if (step % eval_every == 0 or done) and guard.last_eval_step != step:
                psnr = heldout_psnr(ema.model if ema else model, heldout, info, tc.precision)
                diverged = guard.update(psnr, step)
                monitor.log_values(step, {"heldout_psnr": psnr, "best_psnr": guard.best_psnr})
                if info.is_main and guard.best_step == step:
                    save_snapshot(run, "best", ema.model if ema else model, step, psnr=psnr)
                    save_named_training_state(run, "best", training_state.capture(step))
                done = done or (diverged and _on_divergence(guard, psnr, run, training_state))

            if tc.preview_every and step % tc.preview_every == 0 and info.is_main:
                save_preview(
                    run, step, ema.model if ema else model, heldout[:4], monitor, tc.precision
                )

            # save
            due = step % tc.checkpoint_every == 0 or done or stopping
            if info.is_main and step != start_step and due:
                save_snapshot(run, step, ema.model if ema else model, step, tc.keep_snapshots)
                save_training_state(run, step, training_state.capture(step), tc.keep_checkpoints)

            if done or stopping:
                break

            # train one step
            torch.manual_seed(step_seed(tc.seed, info.rank, step))
            set_lr(opt, scheduled_lr(tc.lr, tc.warmup_steps, step, tc.max_steps, tc.lr_decay_frac))
            gan = loss_fn.gan_active(step)
            train_model.train()
            opt.zero_grad(set_to_none=True)
            d_opt.zero_grad(set_to_none=True)
            logs: dict[str, float] = {}
            for micro in range(tc.grad_accum):
                x = to_model_range(next(loader)["video"].to(device, non_blocking=True))
                sync = micro == tc.grad_accum - 1
                scalers = (scaler, d_scaler)
                losses = _backward(
                    x, tc, train_model, train_discs, loss_fn, pre_tanh, scalers, gan, sync
                )
                for k, v in losses.items():
                    logs[k] = logs.get(k, 0.0) + v / tc.grad_accum
            norm = update(opt, scaler, params, tc.grad_clip, logs["g_total"], step, monitor)
            if gan:  # each discriminator clipped on its own
                d_params = [list(discs.d2.parameters()), list(discs.d3.parameters())]
                d_clip = cfg.loss.disc_grad_clip
                d_update(d_opt, d_scaler, d_params, d_clip, logs["d_loss"], step, monitor)
            step += 1
            if ema:
                ema.maybe_update(model, step)
            logs["grad_norm"] = norm
            monitor.add(logs, samples=tc.batch_size * tc.grad_accum)

    monitor.close()
    if stop.requested:
        log.info("stopped at step %d; run the same command again to resume", step)
    return run.root


def _backward(
    x: torch.Tensor,
    tc: TrainConfig,
    model: torch.nn.Module,
    discs: torch.nn.Module,
    loss_fn: AutoencoderLoss,
    pre_tanh: PreTanhProbe,
    scalers: tuple[torch.amp.GradScaler, torch.amp.GradScaler],
    gan: bool,
    sync: bool,
) -> dict[str, float]:
    """Gradients of one micro-batch (1 / `tc.grad_accum` of the step): the generator's loss
    (reconstruction, perceptual, pre-tanh hinge, and the adversarial term when `gan`), then the
    discriminators' loss when `gan`; the logged values. `sync`: the last micro-batch of the
    step, whose backward all-reduces under DDP."""
    precision, accum = tc.precision, tc.grad_accum
    with no_sync_unless(model, sync):
        with autocast(precision, x.device):
            xrec = model(x)
            g_loss, logs = loss_fn.generator_loss(x, xrec, gan)
            hinge = pre_tanh.penalty()
            if hinge is not None:
                g_loss = g_loss + hinge
                logs["latent_hinge"] = hinge.item()
                logs["g_total"] = g_loss.item()  # the loss that is backpropagated
        scalers[0].scale(g_loss / accum).backward()
    if gan:
        with no_sync_unless(discs, sync):
            with autocast(precision, x.device):
                d_loss, d_2d, d_3d = discs(x, xrec)
            scalers[1].scale(d_loss / accum).backward()
        logs.update(d_loss=d_loss.item(), d_2d=d_2d.item(), d_3d=d_3d.item())
    return logs


@dataclass
class PsnrGuard:
    """The held-out PSNR guard of the GAN phase: the best PSNR so far (which `snapshots/best`
    holds) and how many evaluations in a row it has stayed `guard_margin_db` below it."""

    cfg: AutoencoderLossConfig
    best_psnr: float = -math.inf
    best_step: int = -1
    bad_evals: int = 0
    rollbacks: int = 0
    last_eval_step: int = -1

    def update(self, psnr: float, step: int) -> bool:
        """Record an evaluation; True when the PSNR degraded for `guard_patience` of them."""
        self.last_eval_step = step
        if psnr > self.best_psnr:
            self.best_psnr, self.best_step, self.bad_evals = psnr, step, 0
            return False
        if self.cfg.on_divergence == "off":
            return False
        below = psnr < self.best_psnr - self.cfg.guard_margin_db
        self.bad_evals = self.bad_evals + 1 if below else 0
        return self.bad_evals >= self.cfg.guard_patience

    def may_roll_back(self) -> bool:
        return self.cfg.on_divergence == "rollback" and self.rollbacks < self.cfg.max_rollbacks

    def state_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _GUARD_FIELDS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k in _GUARD_FIELDS:
            setattr(self, k, state[k])


_GUARD_FIELDS = ("best_psnr", "best_step", "bad_evals", "rollbacks", "last_eval_step")


def _on_divergence(
    guard: PsnrGuard, psnr: float, run: RunFolder, training_state: TrainingState
) -> bool:
    """Roll back to the best weights (when allowed), or say to stop (True)."""
    drop = guard.best_psnr - psnr
    if guard.may_roll_back():
        log.warning(
            "held-out PSNR %.2f dB is %.2f dB below the best (%.2f dB at step %d): "
            "rolling back to the best weights",
            psnr, drop, guard.best_psnr, guard.best_step,
        )  # fmt: skip
        rollbacks = guard.rollbacks + 1
        training_state.restore(load_training_state(run.checkpoints / "best.pt"))
        guard.rollbacks, guard.bad_evals = rollbacks, 0
        return False
    log.warning(
        "held-out PSNR %.2f dB fell %.2f dB below the best (%.2f dB at step %d) for %d "
        "evaluations: stopping. Use the best snapshot: %s",
        psnr, drop, guard.best_psnr, guard.best_step, guard.cfg.guard_patience, run.snapshot("best"),
    )  # fmt: skip
    return True


def _init_weights(model: TriplaneAutoencoder, path: str) -> None:
    """Start from a snapshot or converted checkpoint (e.g. phase 1 weights for phase 2)."""
    source = load_model(path)
    if not isinstance(source, TriplaneAutoencoder):
        raise PvdmError(f"--init {path} is not an autoencoder checkpoint")
    own = model.state_dict()
    misshaped = [
        f"{k} {tuple(v.shape)} (this model: {tuple(own[k].shape)})"
        for k, v in source.state_dict().items()
        if k in own and v.shape != own[k].shape
    ]
    if misshaped:
        raise PvdmError(
            f"--init {path} does not fit this model ({len(misshaped)} mis-shaped tensors, e.g. "
            f"{misshaped[0]}): use the model settings (width, depth, ...) it was trained with"
        )
    missing = model.load_state_dict(source.state_dict(), strict=False)
    if missing.missing_keys or missing.unexpected_keys:
        raise PvdmError(
            f"--init {path} does not fit this model (missing {missing.missing_keys[:3]}, "
            f"unexpected {missing.unexpected_keys[:3]}): use the same model preset"
        )
    log.info("initialised the autoencoder from %s", path)
