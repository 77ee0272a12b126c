"""A few-step student distilled from a trained diffusion model: `pvdm distill`.

Method: distribution matching distillation (DMD2, Yin et al. 2024), chosen because the
probability-flow ODE of a small, briefly trained PVDM is far worse than its stochastic sampler
(docs/results.md, "The sampler frontier"), which bounds what ODE distillation (progressive or
consistency distillation) can give; DMD matches the distribution instead.

- The student is a copy of the teacher's UNet, sampled by the teacher's own stochastic DDIM
  (eta 1) on a grid of `distill.student_steps` points (1: one network evaluation from pure
  noise). Its pipeline.json records that sampler and step count, so `pvdm sample`, `continue`, `serve`,
  long videos and `PVDMPipeline` use it by default (`pvdm eval` keeps each protocol's pinned
  sampling unless given `--steps`); any other sampler still runs.
- Each step: draw a grid point k, run the student (no gradient) from noise down to it (DMD2's
  backward simulation), predict x0 with gradient, noise it again at a random t and move x0
  along `x0_fake(x_t) - x0_real(x_t)`: the teacher is the real score, a second copy of the
  teacher (the fake score) follows the student's own distribution, trained with the
  teacher's loss on the student's samples `distill.fake_updates` times per student step
  (DMD2's two time-scale update rule).
- Optional, DMD2's GAN term (`distill.gan_weight` > 0): a small critic on the fake score's
  bottleneck features tells noised real latents (the cache's clips) from noised student
  samples; the critic and the fake score learn it in the fake updates (`distill.critic_weight`),
  the student is pushed by the non-saturating generator loss, so it can move towards the data,
  not only towards the teacher.
- Both modes are distilled: with the teacher's `cond_prob` a step is conditional, its
  condition the latent of a real previous clip from the latent cache (`--data`), as in the
  teacher's training.

A run folder like a diffusion run's (config, checkpoints, snapshots of the student, its own
autoencoder copy, pipeline.json); re-running the command resumes exactly.
"""

from __future__ import annotations

import copy
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pvdm.config import load_config
from pvdm.diffusion.cache import LatentCache, is_latent_cache, model_fingerprint
from pvdm.diffusion.pipeline import PVDMPipeline, write_pipeline_file
from pvdm.diffusion.samplers import ddim_step, ddim_times
from pvdm.diffusion.schedule import DiffusionConfig, NoiseSchedule, diffusion_loss
from pvdm.errors import ConfigError
from pvdm.models.latent import TriplaneLatent
from pvdm.runs import RunFolder
from pvdm.runtime import init_distributed
from pvdm.seeds import mix_seed, step_seed
from pvdm.train.checkpoint import TrainingState, load_latest_training_state, save_training_state
from pvdm.train.common import GuardedUpdate, make_scaler, prepare_run, scheduled_lr, set_lr
from pvdm.train.config import TrainConfig
from pvdm.train.ema import EMA
from pvdm.train.interrupt import StopRequest
from pvdm.train.monitor import Monitor
from pvdm.train.snapshots import save_snapshot

log = logging.getLogger(__name__)


@dataclass
class DistillSettings:
    """What the student learns and how the fake score keeps up with it."""

    student_steps: int = 2  # network evaluations per clip of the student (its DDIM grid)
    fake_updates: int = 2  # fake-score updates per student update (DMD2 uses 5)
    fake_lr: float = 1e-4  # the fake score's learning rate (the student's is train.lr)
    # the noise levels at which the two scores are compared, as fractions of the schedule
    t_min: float = 0.02
    t_max: float = 0.98
    # DMD2's GAN term: weight of the student's generator loss (0: off) and of the critic's loss
    # in the fake score's updates
    gan_weight: float = 0.0
    critic_weight: float = 0.01

    def validate(self) -> None:
        if not 1 <= self.student_steps <= 64:
            raise ConfigError(f"student_steps must lie in [1, 64], got {self.student_steps}")
        if not 0 <= self.fake_updates <= 100:
            raise ConfigError(f"fake_updates must lie in [0, 100], got {self.fake_updates}")
        if not 0 < self.fake_lr < 1:
            raise ConfigError(f"fake_lr must lie in (0, 1), got {self.fake_lr}")
        if not 0 <= self.t_min < self.t_max <= 1:
            raise ConfigError(f"need 0 <= t_min < t_max <= 1, got {self.t_min}, {self.t_max}")
        for name in ("gan_weight", "critic_weight"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                raise ConfigError(f"{name} must lie in [0, 100], got {value}")
        if self.gan_weight > 0 and self.fake_updates == 0:
            raise ConfigError("gan_weight > 0 needs fake_updates >= 1 (the critic learns there)")


@dataclass
class DistillRunConfig:
    """Everything one distillation run needs."""

    teacher: str = ""  # a diffusion run folder or pipeline
    latents: str = ""  # the teacher's latent cache ("": the one its run was trained on)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillSettings = field(default_factory=DistillSettings)

    def validate(self) -> None:
        self.distill.validate()


class Scores(torch.nn.Module):
    """The trained networks of a run, one module for the training state (the critic only
    with the GAN term)."""

    def __init__(
        self,
        student: torch.nn.Module,
        fake: torch.nn.Module,
        critic: torch.nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.student, self.fake = student, fake
        if critic is not None:
            self.critic = critic


class PlaneCritic(torch.nn.Module):
    """DMD2's classifier head: a real/fake logit per sample from a UNet's bottleneck planes
    (one 3 x 3 convolution shared by the planes, a spatial mean each, a linear map of the
    three)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.out = torch.nn.Linear(3 * channels, 1)

    def forward(self, planes: list[torch.Tensor]) -> torch.Tensor:
        act = torch.nn.functional.silu
        feats = [act(self.conv(act(p.float()))).mean((2, 3)) for p in planes]
        return self.out(torch.cat(feats, 1)).squeeze(1)


def seeded_critic(unet: torch.nn.Module, seed: int) -> PlaneCritic:
    """A critic for `unet`'s bottleneck width, its initial weights a function of `seed` alone
    (the global random state is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(mix_seed("critic", seed))
        return PlaneCritic(unet.config.model_channels * unet.config.channel_mult[-1])


class Bottleneck:
    """Keeps the output planes of `unet.mid_block` from its last forward."""

    def __init__(self, unet: torch.nn.Module) -> None:
        self.planes: list[torch.Tensor] = []
        unet.mid_block.register_forward_hook(self._keep)

    def _keep(self, module: Any, args: Any, output: Any) -> None:
        self.planes = list(output)

    def __call__(self, unet: torch.nn.Module, x: Any, t: torch.Tensor, kwargs: dict) -> Any:
        """unet(x, t) and its bottleneck planes."""
        out = unet(x, t, **kwargs)
        return out, self.planes


def teacher_settings(teacher: str | Path) -> DiffusionConfig:
    """The diffusion settings a teacher was trained with (its run's config), else the defaults
    (a converted official pipeline: the official ones)."""
    from pvdm.train.diffusion import DiffusionRunConfig

    config = RunFolder(teacher).config
    if config.is_file():
        return load_config(DiffusionRunConfig, config).diffusion
    return DiffusionConfig()


def _cache_of(cfg: DistillRunConfig, teacher: str | Path, autoencoder: Any) -> LatentCache:
    """The latent cache the conditions come from: `latents`, else the teacher's own."""
    path = cfg.latents
    if not path:
        from pvdm.train.diffusion import DiffusionRunConfig

        config = RunFolder(teacher).config
        if config.is_file():
            path = load_config(DiffusionRunConfig, config).data.path
    if not path or not is_latent_cache(path):
        raise ConfigError(
            f"pvdm distill needs --data LATENT_CACHE (the teacher's, from `pvdm cache-latents`): "
            f"the conditional mode is distilled on real previous clips; got {path or 'none'!r}"
        )
    cache = LatentCache(path)
    recorded = cache.manifest.get("autoencoder_fingerprint")
    if recorded is not None and recorded != model_fingerprint(autoencoder):
        raise ConfigError(
            f"the latent cache {path} was encoded with another autoencoder than the teacher's"
        )
    return cache


def distill(cfg: DistillRunConfig, outdir: str | Path, restart: bool = False) -> Path:
    """Distill (or resume distilling) a student of `cfg.teacher` into `outdir`; the run folder."""
    from pvdm.train.diffusion import CachedBatches, _drop_labels

    if not cfg.teacher:
        raise ConfigError("pvdm distill needs --teacher (a diffusion run folder or pipeline)")
    info = init_distributed(cfg.train.device)
    if info.distributed:
        raise ConfigError("pvdm distill runs in one process (no torchrun / --workers)")
    cfg.validate()
    device = info.device
    teacher_pipe = PVDMPipeline.from_pretrained(cfg.teacher, device=device)
    dc = teacher_settings(cfg.teacher)
    cache = _cache_of(cfg, cfg.teacher, teacher_pipe.autoencoder)
    run = RunFolder(outdir)
    prepare_run(run, cfg, info)
    tc, ds = cfg.train, cfg.distill
    if not run.states() or not (run.autoencoder / "config.json").is_file():
        teacher_pipe.autoencoder.save_pretrained(run.autoencoder)
    schedule = teacher_pipe.schedule
    write_pipeline_file(
        run.root,
        ".",
        "autoencoder",
        teacher_pipe.classes,
        schedule={
            "num_timesteps": schedule.num_timesteps,
            "linear_start": schedule.linear_start,
            "linear_end": schedule.linear_end,
        },
        latent_scale=teacher_pipe.latent_scale,
        default_sampler="ddim",
        default_steps={"ddim": ds.student_steps},
        teacher=str(cfg.teacher),
    )

    teacher = teacher_pipe.unet.eval().requires_grad_(False)
    # both start as the teacher; everything runs in eval mode (no dropout while distilling)
    critic = seeded_critic(teacher, tc.seed) if ds.gan_weight > 0 else None
    scores = Scores(copy.deepcopy(teacher), copy.deepcopy(teacher), critic)
    scores = scores.to(device).requires_grad_(True).eval()
    student, fake = scores.student, scores.fake
    bottleneck = Bottleneck(fake) if critic is not None else None
    opt_student = torch.optim.AdamW(
        student.parameters(), lr=tc.lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    fake_params = list(fake.parameters()) + (
        list(critic.parameters()) if critic is not None else []
    )
    opt_fake = torch.optim.AdamW(
        fake_params, lr=ds.fake_lr, betas=tc.betas, weight_decay=tc.weight_decay
    )
    ema = EMA(student, tc.ema_decay, tc.ema_every) if tc.use_ema else None
    training_state = TrainingState(
        cfg, model=scores, optimizer=opt_student, fake_optimizer=opt_fake, ema=ema
    )
    state = load_latest_training_state(run, restart=restart)
    step = training_state.restore(state) if state is not None else 0
    start_step = step
    source = CachedBatches(cache, tc.batch_size, tc.seed, 0, 1)
    times = ddim_times(schedule.num_timesteps, ds.student_steps)
    scale = teacher_pipe.latent_scale  # the UNet's latents are the autoencoder's times this
    num_t = schedule.num_timesteps
    t_range = (int(ds.t_min * (num_t - 1)), max(int(ds.t_max * (num_t - 1)), 1))

    monitor = Monitor(
        run.stats if info.is_main else None,
        start_step=step,
        max_steps=tc.max_steps,
        device=device,
        desc="distill",
    )
    scaler = make_scaler("fp32", device)  # fp32 only: a no-op scaler for the shared update
    update = GuardedUpdate(tc.max_nonfinite, run.checkpoints, "lower train.lr")
    fake_update = GuardedUpdate(
        tc.max_nonfinite, run.checkpoints, "lower distill.fake_lr", what="fake"
    )
    log.info(
        "distilling a %d-step student of %s from step %d to %d on %s (batch %d)",
        ds.student_steps, cfg.teacher, step, tc.max_steps, device, tc.batch_size,
    )  # fmt: skip

    with StopRequest() as stop:
        while True:
            done = step >= tc.max_steps
            if step > monitor.last_step and (step % tc.log_every == 0 or done or stop.requested):
                monitor.report(step)
            due = step % tc.checkpoint_every == 0 or done or stop.requested
            if step != start_step and due:
                save_snapshot(run, step, ema.model if ema else student, step, tc.keep_snapshots)
                save_training_state(run, step, training_state.capture(step), tc.keep_checkpoints)
            if done or stop.requested:
                break

            torch.manual_seed(step_seed(tc.seed, 0, step))
            set_lr(
                opt_student,
                scheduled_lr(tc.lr, tc.warmup_steps, step, tc.max_steps, tc.lr_decay_frac),
            )
            cond = bool(torch.rand(()) < dc.cond_prob)
            z, c, labels = source.get(step, cond, device)
            if scale != 1.0 and c is not None:
                c = c * scale
            labels = _drop_labels(labels, getattr(teacher.config, "num_classes", None), 0.0)
            kwargs = {"cond": c, "labels": labels}

            # the student's sample at a random point of its grid (no gradient before it)
            x0 = student_sample(student, schedule, times, z.randn_like(), kwargs, scale)
            # distribution matching: teacher (real) and fake scores of the re-noised sample
            t = torch.randint(*t_range, (len(z),), device=device)
            noise = x0.randn_like()
            xt = schedule.q_sample(x0.detach(), t, noise)
            with torch.no_grad():
                x0_real = schedule.predict_x0(xt, t, teacher(xt, t, **kwargs).float())
                x0_fake = schedule.predict_x0(xt, t, fake(xt, t, **kwargs).float())
                spread = _per_sample(lambda d: d.abs().mean(1), x0.detach() - x0_real)
                target = x0.detach() - (x0_fake - x0_real) / spread.clamp(min=1e-5)
            loss = 0.5 * _per_sample(lambda d: d.square().mean(1), x0 - target).mean()
            gen_loss = 0.0
            if bottleneck is not None:  # the critic's verdict on the re-noised sample
                _, planes = bottleneck(fake, schedule.q_sample(x0, t, noise), t, kwargs)
                g = torch.nn.functional.softplus(-critic(planes)).mean()
                loss = loss + ds.gan_weight * g
                gen_loss = g.item()
            opt_student.zero_grad(set_to_none=True)
            loss.backward()
            norm = update(
                opt_student, scaler, list(student.parameters()), tc.grad_clip, loss.item(), step,
                monitor,
            )  # fmt: skip

            # the fake score follows the student: the teacher's loss on the student's samples
            fake_total = critic_total = 0.0
            for _ in range(ds.fake_updates):
                tf = torch.randint(0, num_t, (len(z),), device=device)
                nf = x0.randn_like()
                xf = schedule.q_sample(x0.detach(), tf, nf)
                weights = (
                    schedule.min_snr_weights(tf, dc.min_snr_gamma) if dc.min_snr_gamma else None
                )
                if bottleneck is None:
                    fake_loss = diffusion_loss(fake(xf, tf, **kwargs), nf, dc.loss, weights)
                    total = fake_loss
                else:  # + the critic: student samples against real clips at the same levels
                    eps, planes = bottleneck(fake, xf, tf, kwargs)
                    fake_loss = diffusion_loss(eps, nf, dc.loss, weights)
                    real = schedule.q_sample(z * scale, tf, x0.randn_like())
                    _, real_planes = bottleneck(fake, real, tf, kwargs)
                    softplus = torch.nn.functional.softplus
                    d = (softplus(critic(planes)) + softplus(-critic(real_planes))).mean()
                    critic_total += d.item() / ds.fake_updates
                    total = fake_loss + ds.critic_weight * d
                opt_fake.zero_grad(set_to_none=True)
                total.backward()
                fake_update(
                    opt_fake, scaler, fake_params, tc.grad_clip, total.item(), step, monitor
                )
                fake_total += fake_loss.item() / max(ds.fake_updates, 1)
            step += 1
            if ema:
                ema.maybe_update(student, step)
            stats = {"loss": loss.item(), "fake_loss": fake_total, "grad_norm": norm}
            if critic is not None:
                stats |= {"gen_loss": gen_loss, "critic_loss": critic_total}
            monitor.add(stats, samples=tc.batch_size)

    monitor.close()
    if stop.requested:
        log.info("stopped at step %d; run the same command again to resume", step)
    return run.root


def student_sample(
    student: torch.nn.Module,
    schedule: NoiseSchedule,
    times: list[int],
    noise: Any,
    kwargs: dict[str, Any],
    clip_x0: float,
) -> Any:
    """x0 of the student at a random point k of its grid `times` (the sampler's own DDIM steps,
    eta 1, from `noise` through the points before k without gradient), with gradient."""
    k = int(torch.randint(0, len(times) - 1, ()).item())
    x = noise

    def denoise(x: Any, t: torch.Tensor) -> Any:
        return student(x, t, **kwargs).float()

    with torch.no_grad():
        for t, t_next in itertools.pairwise(times[: k + 1]):
            x, _ = ddim_step(denoise, x, schedule, t, t_next, 1.0, None, clip_x0)
    tb = torch.full((len(x),), times[k], device=x.device, dtype=torch.long)
    return schedule.predict_x0(x, tb, denoise(x, tb))


def _per_sample(reduce, latent: Any) -> torch.Tensor:
    """`reduce` over each sample's values [B, N] -> [B] (a latent is packed first)."""
    flat = latent.pack() if isinstance(latent, TriplaneLatent) else latent
    return reduce(flat.flatten(1))
