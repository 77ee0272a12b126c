"""Latent diffusion training (PVDM stage 2), the official joint recipe (spec section 3).

Each micro-batch is, with probability `cond_prob` (one coin per micro-batch, as the official
one per iteration), conditional: target = latent of the second half of a double-length clip,
condition = latent of its first half; otherwise unconditional: target = a T-frame window at a
random offset p in {0..T}, condition = zeros. Epsilon prediction, L2 loss, constant learning
rate (optional warm-up), AdamW, EMA every `train.ema_every` steps (25 in the paper presets). Latents come from a latent cache
(`pvdm cache-latents`) or are encoded on the fly from videos.

The loop order is the autoencoder's without its held-out evaluation: report, preview, save,
stop if done, step.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from pvdm.data import DataConfig, make_loader, open_dataset, to_model_range
from pvdm.diffusion.cache import LatentCache, is_latent_cache, model_fingerprint
from pvdm.diffusion.pipeline import PVDMPipeline, write_pipeline_file
from pvdm.diffusion.sampling import SamplingConfig
from pvdm.diffusion.schedule import DiffusionConfig, NoiseSchedule, diffusion_loss
from pvdm.errors import ConfigError
from pvdm.models import load_model
from pvdm.models.unet import TriplaneUNet, UNetConfig
from pvdm.runs import RunFolder
from pvdm.runtime import any_rank, autocast, init_distributed, local_batch_size
from pvdm.seeds import step_seed
from pvdm.train.checkpoint import (
    TrainingState,
    load_latest_training_state,
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
from pvdm.train.snapshots import save_snapshot

log = logging.getLogger(__name__)


@dataclass
class DiffusionRunConfig:
    """Everything one diffusion training run needs."""

    model: UNetConfig = field(default_factory=UNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    autoencoder: str = ""  # run folder, snapshot or converted checkpoint of the autoencoder
    preview_samples: int = 4
    preview_sampler: str | None = None  # None: the default of pvdm.diffusion.SamplingConfig
    preview_steps: int | None = None  # None: the sampler's default

    def preview_request(self) -> SamplingConfig:
        """The previews' generation request: fixed seeds, the first class if any."""
        request = SamplingConfig(
            num=self.preview_samples,
            labels=[0] if self.model.num_classes is not None else None,
        )
        if self.preview_sampler is not None:
            request = request.replace(sampler=self.preview_sampler)
        return request.replace(steps=self.preview_steps)

    def validate(self) -> None:
        try:
            self.preview_request().validate(self.diffusion.num_timesteps)
        except ConfigError as e:
            raise ConfigError(f"preview: {e}") from None


class CachedBatches:
    """Micro-batches from a latent cache, a pure function of the batch index."""

    kind = "cached"

    def __init__(self, cache: LatentCache, batch_size: int, seed: int, rank: int, world_size: int):
        from pvdm.data import ClipSampler

        self.cache = cache
        self.batch_size = batch_size
        self.sampler = ClipSampler(
            len(cache), batch_size * world_size, seed=seed, rank=rank, world_size=world_size
        )

    def get(self, batch_index: int, cond: bool, device: torch.device):
        indices = torch.tensor([r.index for r in self.sampler.batch(batch_index)])
        entry = self.cache.batch(indices)
        z = self.cache.latents(entry, "target" if cond else "uncond").to(device)
        c = self.cache.latents(entry, "prev").to(device) if cond else None
        return z, c, entry["label"].to(device)


class EncodedBatches:
    """Micro-batches encoded on the fly from double-length video clips (the official path)."""

    kind = "encoded"

    def __init__(self, loader_factory, autoencoder: torch.nn.Module, frames: int, precision: str):
        self.loader_factory = loader_factory
        self.loader = None
        self.next_index = None
        self.ae = autoencoder
        self.frames = frames
        self.precision = precision

    def get(self, batch_index: int, cond: bool, device: torch.device):
        if self.loader is None or batch_index != self.next_index:
            self.loader = iter(self.loader_factory(batch_index))
        self.next_index = batch_index + 1
        batch = next(self.loader)
        video = to_model_range(batch["video"].to(device, non_blocking=True))  # [B, C, 2T, H, W]
        t = self.frames
        with torch.no_grad(), autocast(self.precision, device):
            if cond:
                z = self.ae.encode(video[:, :, t:]).float()
                c = self.ae.encode(video[:, :, :t]).float()
            else:
                prefix = int(torch.randint(0, t + 1, ()).item())
                z = self.ae.encode(video[:, :, prefix : prefix + t]).float()
                c = None
        return z, c, batch["label"].to(device)


def train_diffusion(cfg: DiffusionRunConfig, outdir: str | Path, restart: bool = False) -> Path:
    """Train (or resume) a diffusion model in `outdir`; returns the run folder.

    `restart` starts from step 0 when every saved training state is unreadable (else an error).
    """
    info = init_distributed(cfg.train.device)
    if not cfg.autoencoder:
        raise ConfigError("train-diffusion needs --autoencoder (a run folder or checkpoint)")
    run = RunFolder(outdir)
    prepare_run(run, cfg, info)
    tc, dc = cfg.train, cfg.diffusion
    device = info.device

    autoencoder, ae_name = _run_autoencoder(cfg, run, info.is_main)
    autoencoder = autoencoder.to(device).eval().requires_grad_(False)

    source, classes = _latent_source(cfg, autoencoder, ae_name, info)
    if info.is_main:
        write_pipeline_file(
            run.root,
            ".",
            "autoencoder",
            classes,
            schedule=_schedule_args(dc),
            latent_scale=dc.latent_scale,
        )

    torch.manual_seed(tc.seed)
    unet = TriplaneUNet(cfg.model).to(device)
    schedule = NoiseSchedule.from_config(dc)
    opt = torch.optim.AdamW(
        unet.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    scaler = make_scaler(tc.precision, device)
    ema = EMA(unet, tc.ema_decay, tc.ema_every) if tc.use_ema else None

    training_state = TrainingState(cfg, model=unet, optimizer=opt, scaler=scaler, ema=ema)
    state = load_latest_training_state(run, restart=restart)
    step = training_state.restore(state) if state is not None else 0
    start_step = step
    train_unet = (
        DDP(unet, device_ids=[device] if device.type == "cuda" else None)
        if info.distributed
        else unet
    )

    monitor = Monitor(
        run.stats if info.is_main else None,
        start_step=step,
        max_steps=tc.max_steps,
        device=device,
        tensorboard_dir=run.tensorboard if (info.is_main and tc.tensorboard) else None,
        desc="diffusion",
    )
    params = list(unet.parameters())
    update = GuardedUpdate(tc.max_nonfinite, run.checkpoints, "lower train.lr")
    log.info(
        "training the diffusion model from step %d to %d on %s (%s latents, batch %d x %d accum)",
        step, tc.max_steps, device, source.kind, tc.batch_size, tc.grad_accum,
    )  # fmt: skip

    with StopRequest() as stop:
        while True:
            done = step >= tc.max_steps
            stopping = any_rank(stop.requested)
            if step > monitor.last_step and (step % tc.log_every == 0 or done or stopping):
                monitor.report(step)
            if tc.preview_every and step % tc.preview_every == 0 and info.is_main:
                sampling = ema.model if ema else unet
                _preview(run, step, sampling, autoencoder, schedule, cfg, classes, monitor)
            due = step % tc.checkpoint_every == 0 or done or stopping
            if info.is_main and step != start_step and due:
                save_snapshot(run, step, ema.model if ema else unet, step, tc.keep_snapshots)
                save_training_state(run, step, training_state.capture(step), tc.keep_checkpoints)
            if done or stopping:
                break

            torch.manual_seed(step_seed(tc.seed, info.rank, step))
            set_lr(opt, scheduled_lr(tc.lr, tc.warmup_steps, step, tc.max_steps, tc.lr_decay_frac))
            train_unet.train()
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for micro in range(tc.grad_accum):
                last = micro == tc.grad_accum - 1
                with no_sync_unless(train_unet, last):
                    loss = _micro_batch_loss(
                        train_unet, source, schedule, cfg, step * tc.grad_accum + micro, device
                    )
                    scaler.scale(loss / tc.grad_accum).backward()
                total += loss.item() / tc.grad_accum
            norm = update(opt, scaler, params, tc.grad_clip, total, step, monitor)
            step += 1
            if ema:
                ema.maybe_update(unet, step)
            monitor.add({"loss": total, "grad_norm": norm}, samples=tc.batch_size * tc.grad_accum)

    monitor.close()
    if stop.requested:
        log.info("stopped at step %d; run the same command again to resume", step)
    return run.root


def _latent_source(cfg: DiffusionRunConfig, autoencoder: Any, ae_name: str, info: Any):
    """The training latents (a latent cache, or videos encoded on the fly) and the class names;
    a cache of another autoencoder, or classes the model cannot hold, are refused."""
    tc = cfg.train
    local_batch = local_batch_size(tc.batch_size, info.world_size)
    frames = autoencoder.config.frames
    if is_latent_cache(cfg.data.path):
        cache = LatentCache(cfg.data.path)
        classes = cache.classes
        recorded = cache.manifest.get("autoencoder_fingerprint")
        if recorded is not None and recorded != model_fingerprint(autoencoder):
            raise ConfigError(
                f"the latent cache {cfg.data.path} was encoded with another autoencoder than "
                f"{ae_name} (recorded: {cache.manifest.get('autoencoder', '?')}); give "
                "that autoencoder, or rebuild the cache with `pvdm cache-latents`"
            )
        source: Any = CachedBatches(cache, local_batch, tc.seed, info.rank, info.world_size)
    else:
        dataset = open_dataset(cfg.data, clip_frames=2 * frames)
        classes = dataset.classes

        def loader_factory(start_batch: int):
            return make_loader(
                dataset,
                batch_size=local_batch,
                seed=tc.seed,
                start_batch=start_batch,
                rank=info.rank,
                world_size=info.world_size,
                num_workers=cfg.data.num_workers,
            )

        source = EncodedBatches(loader_factory, autoencoder, frames, tc.precision)
    num_classes = cfg.model.num_classes
    if num_classes is not None and not classes:
        raise ConfigError("model.num_classes is set but the data has no class labels")
    if num_classes is not None and len(classes) > num_classes:
        # label num_classes is the null token: a smaller count silently merges classes into it
        raise ConfigError(
            f"the data has {len(classes)} classes but model.num_classes is {num_classes}; "
            f"set model.num_classes={len(classes)}"
        )
    return source, classes


def _micro_batch_loss(
    unet: torch.nn.Module,
    source: Any,
    schedule: NoiseSchedule,
    cfg: DiffusionRunConfig,
    batch_index: int,
    device: torch.device,
) -> torch.Tensor:
    """The loss of one micro-batch: a clip from nothing (1 - cond_prob) or the next clip given
    the previous one (cond_prob), noised at a random step; the UNet predicts the noise."""
    dc = cfg.diffusion
    cond = bool(torch.rand(()) < dc.cond_prob)
    z, c, labels = source.get(batch_index, cond, device)
    if dc.latent_scale != 1.0:
        z, c = z * dc.latent_scale, (c * dc.latent_scale if c is not None else None)
    labels = _drop_labels(labels, cfg.model.num_classes, dc.class_dropout)
    t = torch.randint(0, schedule.num_timesteps, (len(z),), device=device)
    noise = z.randn_like()
    xt = schedule.q_sample(z, t, noise)
    with autocast(cfg.train.precision, device):
        eps = unet(xt, t, cond=c, labels=labels)
        weights = schedule.min_snr_weights(t, dc.min_snr_gamma) if dc.min_snr_gamma else None
        return diffusion_loss(eps, noise, dc.loss, weights)


def _run_autoencoder(
    cfg: DiffusionRunConfig, run: RunFolder, is_main: bool
) -> tuple[torch.nn.Module, str]:
    """The autoencoder a run encodes with, the one it samples with, and a name for messages.

    The run keeps its own copy in RUN/autoencoder (pipeline.json points there, so `pvdm sample
    --model RUN` needs nothing else), taken before the first step. A resumed run encodes with
    that copy too: `cfg.autoencoder` may have moved on since (a run folder whose `best` changed
    when its training was resumed), and latents of another encoder would train a UNet that the
    copy cannot decode. A changed source is said loudly.
    """
    source = load_model(cfg.autoencoder, expect="autoencoder")
    copy = run.autoencoder
    if not run.states() or not (copy / "config.json").is_file():
        if is_main:  # nothing trained yet (or an older run without a copy): copy this one
            source.save_pretrained(copy)
        return source, str(cfg.autoencoder)
    own = load_model(copy, expect="autoencoder")
    if model_fingerprint(own) != model_fingerprint(source):
        log.warning(
            "%s is no longer the autoencoder this run started with (was its training resumed?); "
            "the run goes on encoding with its copy %s, which it also samples with; to train "
            "on the new autoencoder, start a new run",
            cfg.autoencoder,
            copy,
        )
    return own, f"{copy} (this run's copy of {cfg.autoencoder})"


def _drop_labels(labels: torch.Tensor, num_classes: int | None, p: float) -> torch.Tensor | None:
    """Class labels with dropout to the null class (index num_classes), or None if unconditional."""
    if num_classes is None:
        return None
    drop = torch.rand(labels.shape, device=labels.device) < p
    return torch.where(drop | (labels < 0), torch.full_like(labels, num_classes), labels)


def _schedule_args(dc: DiffusionConfig) -> dict[str, Any]:
    return {
        "num_timesteps": dc.num_timesteps,
        "linear_start": dc.linear_start,
        "linear_end": dc.linear_end,
    }


@torch.no_grad()
def _preview(run, step, unet, autoencoder, schedule, cfg, classes, monitor) -> None:
    """Samples at fixed seeds (the same every time), written as a GIF and to TensorBoard."""
    from pvdm.data import write_video

    pipe = PVDMPipeline(unet, autoencoder, schedule, classes, cfg.diffusion.latent_scale)
    videos = pipe(cfg.preview_request(), progress=False)
    write_video(run.previews / f"samples-{step:08d}.gif", videos)
    monitor.add_video("samples", videos, step)
