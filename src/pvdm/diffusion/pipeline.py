"""Generation with a trained PVDM: short clips, videos of any length, and continuation.

A pipeline joins a triplane UNet and the autoencoder whose latents it models. Long videos are
made clip by clip (spec section 4): the first clip from nothing (or from a class), each next one
conditioned on the latent of the previous clip, by default re-encoded from its decoded frames
(the official conditional evaluation path); `reencode=False` passes the latent through.
`latent_scale` (pipeline.json; official 1) is the factor the UNet's latents were multiplied by
in training: conditions are scaled by it, samples divided by it before decoding.
Memory does not grow with length beyond the uint8 output itself.

Every sample has its own seed: its noise comes from generators seeded by (seed, clip), so a
video does not depend on the batch it was generated in or on the number of devices.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from pvdm.atomic import atomic_write_text
from pvdm.data import from_model_range, to_model_range
from pvdm.diffusion.samplers import SAMPLERS, Callback, evaluations, make_denoiser
from pvdm.diffusion.sampling import DEFAULT_SAMPLER, SamplingConfig
from pvdm.diffusion.schedule import NoiseSchedule
from pvdm.errors import PvdmError
from pvdm.models import TriplaneLatent, load_model, randn_latent
from pvdm.runtime import generator, module_device
from pvdm.seeds import mix_seed

log = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.json"


class PVDMPipeline:
    """A UNet plus its autoencoder; call it to get uint8 videos [B, C, T, H, W]."""

    def __init__(
        self,
        unet: torch.nn.Module,
        autoencoder: torch.nn.Module,
        schedule: NoiseSchedule | None = None,
        classes: Sequence[str] | None = None,
        latent_scale: float = 1.0,
        default_steps: dict[str, int] | None = None,
        default_sampler: str | None = None,
    ):
        if not 0 < latent_scale < 1e3:
            raise PvdmError(f"latent_scale must be positive, got {latent_scale}")
        if default_sampler is not None and default_sampler not in SAMPLERS:
            raise PvdmError(
                f"unknown default sampler {default_sampler!r}; use one of {', '.join(SAMPLERS)}"
            )
        # this model's own sampler and step count, used when a request leaves them unset (a
        # distilled student records the grid it was trained for: `pvdm distill`)
        self.default_steps = dict(default_steps or {})
        self.default_sampler = default_sampler or DEFAULT_SAMPLER
        self.unet = unet.eval()
        self.autoencoder = autoencoder.eval()
        self.schedule = schedule or NoiseSchedule()
        self.classes = list(classes) if classes else None
        num_classes = getattr(getattr(unet, "config", None), "num_classes", None)
        if self.classes and num_classes is not None and len(self.classes) != num_classes:
            raise PvdmError(
                f"the pipeline names {len(self.classes)} classes but the UNet has {num_classes}; "
                "fix 'classes' in pipeline.json"
            )
        self.latent_scale = float(latent_scale)
        ae = autoencoder.config
        self.clip_frames = ae.frames

    @property
    def device(self) -> torch.device:
        return module_device(self.unet)

    def to(self, device: torch.device | str) -> PVDMPipeline:
        self.unet.to(device)
        self.autoencoder.to(device)
        return self

    # ---- files ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> PVDMPipeline:
        """Load a pipeline folder, a diffusion run folder, or a converted official checkpoint."""
        path = Path(path)
        if not (path / PIPELINE_FILE).is_file():
            raise PvdmError(
                f"{path} is not a pvdm pipeline (no {PIPELINE_FILE}); give a diffusion run folder, "
                "a folder from `pvdm convert official`, or one written by save_pretrained"
            )
        spec = read_pipeline_spec(path / PIPELINE_FILE)
        classes = spec.get("classes")
        unet, ae = load_model(path / spec["unet"]), load_model(path / spec["autoencoder"])
        for model, want, key in ((unet, "unet", "unet"), (ae, "autoencoder", "autoencoder")):
            if getattr(model, "model_type", None) != want:
                raise PvdmError(
                    f"{path / PIPELINE_FILE}: '{key}' points to a "
                    f"'{getattr(model, 'model_type', '?')}' model, not a {want}; fix the file "
                    "(are 'unet' and 'autoencoder' swapped?)"
                )
        schedule_cfg = spec.get("schedule") or {}
        try:
            schedule = NoiseSchedule(**schedule_cfg) if schedule_cfg else NoiseSchedule()
        except (TypeError, ValueError) as e:
            raise PvdmError(f"{path / PIPELINE_FILE}: invalid 'schedule' ({e})") from None
        scale = spec.get("latent_scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale < 1e3:
            raise PvdmError(
                f"{path / PIPELINE_FILE}: 'latent_scale' must be a positive number, got {scale!r}"
            )
        default_steps = spec.get("default_steps") or {}
        if not isinstance(default_steps, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1
            for k, v in default_steps.items()
        ):
            raise PvdmError(
                f"{path / PIPELINE_FILE}: 'default_steps' must map sampler names to step counts, "
                f"got {default_steps!r}"
            )
        default_sampler = spec.get("default_sampler")
        if default_sampler is not None and (
            not isinstance(default_sampler, str) or default_sampler not in SAMPLERS
        ):
            raise PvdmError(
                f"{path / PIPELINE_FILE}: 'default_sampler' must be one of {', '.join(SAMPLERS)}, "
                f"got {default_sampler!r}"
            )
        return cls(
            unet, ae, schedule, classes, latent_scale=scale, default_steps=default_steps,
            default_sampler=default_sampler,
        ).to(device)  # fmt: skip

    def save_pretrained(self, path: str | Path) -> Path:
        """Write `autoencoder/`, `unet/` and `pipeline.json` into `path`."""
        path = Path(path)
        self.autoencoder.save_pretrained(path / "autoencoder")
        self.unet.save_pretrained(path / "unet")
        sched = self.schedule
        schedule = dict(
            num_timesteps=sched.num_timesteps,
            linear_start=sched.linear_start,
            linear_end=sched.linear_end,
        )
        write_pipeline_file(
            path,
            "unet",
            "autoencoder",
            self.classes,
            schedule=schedule,
            latent_scale=self.latent_scale,
            **({"default_steps": self.default_steps} if self.default_steps else {}),
            **(
                {"default_sampler": self.default_sampler}
                if self.default_sampler != DEFAULT_SAMPLER
                else {}
            ),
        )
        return path

    # ---- generation ----------------------------------------------------------------------
    def _noise(self, seeds: Sequence[int], clip: int) -> TriplaneLatent:
        gens = [generator(mix_seed("noise", s, clip), self.device) for s in seeds]
        return randn_latent(len(seeds), self.autoencoder.latent_shape(), gens, self.device)

    def label_ids(self, labels: Sequence[str | int] | None, num: int) -> torch.Tensor | None:
        """Class names or indices as a tensor (None for an unconditional model).

        A string is a class name first (folders named `1/ 2/ 3/` are names), an index only when
        no class has that name; an int is an index."""
        if labels is None:
            return None
        num_classes = getattr(self.unet.config, "num_classes", None)
        if num_classes is None:
            raise PvdmError("this model is not class-conditional; drop --class")
        names = self.classes or []
        ids = []
        for label in labels:
            if isinstance(label, str) and label in names:
                ids.append(names.index(label))
            elif isinstance(label, int) or (isinstance(label, str) and label.isdigit()):
                ids.append(int(label))
            else:
                raise PvdmError(f"unknown class {label!r}; classes: {', '.join(names)}")
        for i in ids:
            if not 0 <= i < num_classes:  # index num_classes is the null (unconditional) token
                raise PvdmError(
                    f"class index {i} is out of range: this model has {num_classes} classes "
                    f"(0..{num_classes - 1})"
                )
        if len(ids) == 1:
            ids = ids * num
        return torch.tensor(ids, device=self.device)

    def resolve(self, request: SamplingConfig | None = None, **fields: Any) -> SamplingConfig:
        """`request` (default: the defaults) with `fields` changed, checked against this model:
        sampler and steps (the model's own `default_sampler` and `default_steps` first), frames
        and seeds filled in, classes looked up. Its `record()` says what a run of it did."""
        request = (request or SamplingConfig()).replace(**fields)
        if request.sampler is None:
            request = request.replace(sampler=self.default_sampler)
        if request.steps is None and request.sampler in self.default_steps:
            request = request.replace(steps=self.default_steps[request.sampler])
        request = request.validate(self.schedule.num_timesteps, self.clip_frames)
        self.label_ids(request.labels, request.num)  # a bad class fails before any sampling
        return request

    @torch.no_grad()
    def sample_latents(
        self,
        request: SamplingConfig,
        seeds: Sequence[int],
        clip: int = 0,
        cond: TriplaneLatent | None = None,
        labels: torch.Tensor | None = None,
        callback: Callback | None = None,
    ) -> TriplaneLatent:
        """One clip's latents for each of `seeds` with `request`'s sampler (clip k of a long
        video uses clip=k).

        `cond` and the result are autoencoder latents (the UNet's space is `latent_scale` times
        them). `callback` gets each sampler step (see `pvdm.diffusion.samplers`) and the network
        evaluations of this clip so far (`evaluations`: guidance costs extra calls).
        """
        scale = self.latent_scale
        if cond is not None and scale != 1.0:
            cond = cond * scale
        denoiser = make_denoiser(
            self.unet,
            cond=cond,
            labels=labels,
            guidance=request.guidance,
            class_guidance=request.class_guidance,
        )
        calls = 0

        def counted(x: Any, t: torch.Tensor) -> Any:
            nonlocal calls
            calls += 1
            return denoiser(x, t)

        def report(info: dict[str, Any]) -> None:
            if callback is not None:
                callback({**info, "evaluations": calls * evaluations(denoiser)})

        z = request.spec.fn(
            counted,
            self._noise(seeds, clip),
            self.schedule,
            request.steps,
            eta=request.eta,
            generator=[generator(mix_seed("sampler", s, clip), self.device) for s in seeds],
            clip_x0=scale,
            callback=report,
        )
        return z / scale if scale != 1.0 else z

    @torch.no_grad()
    def __call__(
        self,
        request: SamplingConfig | None = None,
        /,
        *,
        context: torch.Tensor | None = None,
        callback: Callback | None = None,
        progress: bool = True,
        **fields: Any,
    ) -> torch.Tensor:
        """Generate videos as uint8 [B, C, T, H, W]: `request` (a `SamplingConfig`, default its
        defaults) with any of its fields changed by keyword, e.g.
        `pipe(num=4, frames=64, sampler="dpm", steps=20, seed=0)`.

        `context` (uint8 [B or 1, C, T', H, W], T' >= one clip) continues given videos: their
        last clip conditions the first generated one. `callback` is called after every sampler
        step with the sampler's dict plus `evaluations` (network evaluations of this clip so far),
        `clip`, `num_clips`, `batch`, `num_batches` and `fraction` (of the whole request done);
        raising from it stops the run.
        """
        request = self.resolve(request, **fields)
        seeds, batch_size, clip_frames = request.seed_list, request.batch_size, self.clip_frames
        num_clips = -(-request.frames // clip_frames)
        num_batches = -(-len(seeds) // batch_size)
        label_ids = self.label_ids(request.labels, len(seeds))
        out = []
        bar = tqdm(total=len(seeds) * num_clips, desc="clips", unit="clip", disable=not progress)
        for b, i in enumerate(range(0, len(seeds), batch_size)):
            batch_seeds = seeds[i : i + batch_size]
            y = label_ids[i : i + batch_size] if label_ids is not None else None
            cond = None
            if context is not None:
                ctx = context if context.shape[0] == 1 else context[i : i + batch_size]
                ctx = ctx.expand(len(batch_seeds), *ctx.shape[1:])
                cond = self.encode(ctx[:, :, -clip_frames:])
            pieces = []
            for k in range(num_clips):

                def on_step(info: dict[str, Any], b: int = b, k: int = k) -> None:
                    done = (b * num_clips + k) * info["total"] + info["step"] + 1
                    where = {"clip": k, "num_clips": num_clips, "batch": b}
                    total = num_batches * num_clips * info["total"]
                    callback(
                        {**info, **where, "num_batches": num_batches, "fraction": done / total}
                    )

                z = self.sample_latents(request, batch_seeds, k, cond, y, callback and on_step)
                video = self.decode(z)
                pieces.append(video.cpu())
                if k + 1 < num_clips:  # the next clip's condition
                    cond = self.encode(video) if request.reencode else z
                bar.update(len(batch_seeds))
            out.append(torch.cat(pieces, dim=2)[:, :, : request.frames])
        bar.close()
        return torch.cat(out)

    def encode(self, video: torch.Tensor) -> TriplaneLatent:
        """uint8 [B, C, T, H, W] -> latent."""
        return self.autoencoder.encode(to_model_range(video.to(self.device)))

    def decode(self, z: TriplaneLatent) -> torch.Tensor:
        """latent -> uint8 [B, C, T, H, W] (official decode: clamp, then truncation to uint8)."""
        return from_model_range(self.autoencoder.decode(z))


def write_pipeline_file(
    folder: str | Path,
    unet: str,
    autoencoder: str,
    classes: Sequence[str] | None = None,
    **extra: Any,
) -> Path:
    """Describe a pipeline folder: where its UNet and autoencoder are (relative paths)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "format": "pvdm-pipeline",
        "unet": unet,
        "autoencoder": autoencoder,
        "classes": classes,
        **extra,
    }
    atomic_write_text(folder / PIPELINE_FILE, json.dumps(spec, indent=2))
    return folder


def read_pipeline_spec(file: Path) -> dict[str, Any]:
    """A pipeline.json, checked: an object naming the unet and autoencoder folders."""
    try:
        spec = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise PvdmError(f"{file} cannot be read ({e}); write it again or re-run training") from None
    if not isinstance(spec, dict):
        raise PvdmError(f"{file} must hold a JSON object, got {type(spec).__name__}")
    for key in ("unet", "autoencoder"):
        if not isinstance(spec.get(key), str) or not spec[key]:
            raise PvdmError(f"{file} must name the '{key}' folder as a string")
    if spec.get("classes") is not None and not (
        isinstance(spec["classes"], list) and all(isinstance(c, str) for c in spec["classes"])
    ):
        raise PvdmError(f"{file}: 'classes' must be a list of names or null")
    if spec.get("schedule") is not None and not isinstance(spec["schedule"], dict):
        raise PvdmError(f"{file}: 'schedule' must be an object or null")
    return spec
