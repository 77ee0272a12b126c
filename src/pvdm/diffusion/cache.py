"""Latent caching: encode a video dataset once into a sharded on-disk store.

The official trainer re-encodes two 16-frame clips per sample at every step, about 4x the
UNet's own training FLOPs. `build_latent_cache` instead draws `windows_per_video` random
double-length windows (2T frames) per video, seeded, and stores for each window the latents
the joint training recipe uses (spec section 3.2):

- `prev`: frames [0, T) of the window, the condition of a conditional step;
- `target`: frames [T, 2T), its target;
- `uncond`: frames [p, p + T) with p drawn from {0..T}, the target of an unconditional step.

The official loader redraws p at every step; here p is fixed per cached window (several
windows per video give several p). Layout: `CACHE/manifest.json` and the shards it lists,
`CACHE/shard-<build>-NNNNN.safetensors` (packed latents [n, C, N] plus `label` and `video`).

A cache is all of one build: a rebuild writes its shards under new names (its own `<build>`)
and switches over by replacing the manifest, the one write that commits it; the old shards are
deleted only after that. A rebuild killed part-way (e.g. with another autoencoder) leaves the
old manifest with the old shards it fingerprints, never new shards under an old manifest.
"""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from pvdm.atomic import atomic_path, atomic_write_text
from pvdm.data import to_model_range
from pvdm.errors import DataError
from pvdm.jsonl import parse_json
from pvdm.models.latent import LatentShape, TriplaneLatent
from pvdm.runtime import autocast, module_device
from pvdm.seeds import mix_seed

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
_KINDS = ("prev", "target", "uncond")


def is_latent_cache(path: str | Path) -> bool:
    """Whether `path` is a folder written by `build_latent_cache`."""
    return (Path(path) / "manifest.json").is_file()


@torch.no_grad()
def build_latent_cache(
    autoencoder: torch.nn.Module,
    dataset: Any,
    out: str | Path,
    *,
    frames: int,
    windows_per_video: int = 4,
    seed: int = 0,
    batch_size: int = 8,
    shard_size: int = 4096,
    dtype: torch.dtype = torch.float16,
    precision: str = "fp32",
    info: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Encode `windows_per_video` double-length windows of every video into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = module_device(autoencoder)
    autoencoder.eval()
    requests = [
        (v, w) for v in range(len(dataset)) for w in range(windows_per_video)
    ]  # fmt: skip
    buffers: dict[str, list[torch.Tensor]] = {k: [] for k in (*_KINDS, "label", "video")}
    shards: list[dict[str, Any]] = []
    shape: LatentShape | None = None
    build = secrets.token_hex(4)  # names no shard of the cache being replaced has

    def flush() -> None:
        if not buffers["label"]:
            return
        name = f"shard-{build}-{len(shards):05d}.safetensors"
        tensors = {k: torch.cat(v) for k, v in buffers.items()}
        with atomic_path(out / name) as tmp:
            save_file(tensors, str(tmp))
        shards.append({"file": name, "entries": len(tensors["label"])})
        for v in buffers.values():
            v.clear()

    for i in tqdm(
        range(0, len(requests), batch_size), desc="caching latents", disable=not progress
    ):
        chunk = requests[i : i + batch_size]
        clips, labels, videos = [], [], []
        for v, w in chunk:
            rng = np.random.default_rng(mix_seed("cache", seed, v, w))
            info_v = dataset.videos[v]
            start = int(
                rng.integers(0, max(info_v.num_frames - 2 * frames * dataset.stride, 0) + 1)
            )
            clip = dataset.clip(v, start)  # uint8 [C, 2T, H, W]
            prefix = int(rng.integers(0, frames + 1))
            clips.append(
                torch.stack([clip[:, :frames], clip[:, frames:], clip[:, prefix : prefix + frames]])
            )
            labels.append(info_v.label if info_v.label is not None else -1)
            videos.append(v)
        x = to_model_range(torch.cat(clips).to(device))  # [3B, C, T, H, W]: prev, target, uncond
        with autocast(precision, device):
            z = autoencoder.encode(x)
        shape = z.shape
        packed = z.pack().float()  # [3B, C, N]
        packed = packed.reshape(len(chunk), 3, *packed.shape[1:]).to(dtype).cpu()
        for k, kind in enumerate(_KINDS):
            buffers[kind].append(packed[:, k])
        buffers["label"].append(torch.tensor(labels, dtype=torch.int64))
        buffers["video"].append(torch.tensor(videos, dtype=torch.int64))
        if sum(len(b) for b in buffers["label"]) >= shard_size:
            flush()
    flush()
    if shape is None:
        raise DataError("no video to cache")
    manifest = {
        "format": "pvdm-latent-cache",
        "autoencoder_fingerprint": model_fingerprint(autoencoder),
        "format_version": CACHE_FORMAT_VERSION,
        "geometry": shape._asdict(),  # the LatentShape every entry unpacks to
        "frames": frames,
        "windows_per_video": windows_per_video,
        "seed": seed,
        "dtype": str(dtype).removeprefix("torch."),
        "num_entries": sum(s["entries"] for s in shards),
        "num_videos": len(dataset),
        "classes": dataset.classes,
        "shards": shards,
        **(info or {}),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2))  # the switch
    _remove_unlisted_shards(out, {shard["file"] for shard in shards})
    log.info("cached %d windows of %d videos in %s", manifest["num_entries"], len(dataset), out)
    return out


def _remove_unlisted_shards(out: Path, keep: set[str]) -> None:
    """Delete the shards of replaced or abandoned builds (those the manifest does not list)."""
    for path in out.glob("shard-*.safetensors"):
        if path.name not in keep:
            path.unlink(missing_ok=True)


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of a model's weights (names, dtypes, shapes, bytes): the same for every copy."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


class LatentCache(torch.utils.data.Dataset):
    """A latent cache loaded into memory: entry i -> dict of packed latents and the label;
    `latents(batch, kind)` unpacks them to `TriplaneLatent`s of `shape`."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not is_latent_cache(path):
            raise DataError(
                f"{path} is not a latent cache (no manifest.json); build one with `pvdm cache-latents`"
            )
        rebuild = "; rebuild it with `pvdm cache-latents`"
        try:
            self.manifest = parse_json((path / "manifest.json").read_bytes())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}/manifest.json cannot be read ({e}){rebuild}") from None
        if not isinstance(self.manifest, dict):
            raise DataError(f"{path}/manifest.json is not a cache manifest{rebuild}")
        if self.manifest.get("format_version") != CACHE_FORMAT_VERSION:
            raise DataError(
                f"{path}: unsupported cache format version {self.manifest.get('format_version')}"
            )
        try:
            self.shape = LatentShape(**self.manifest["geometry"])
            shards = [str(shard["file"]) for shard in self.manifest["shards"]]
        except (KeyError, TypeError) as e:
            raise DataError(
                f"{path}/manifest.json is incomplete or malformed ({e}){rebuild}"
            ) from None
        parts: dict[str, list[torch.Tensor]] = {}
        for name in shards:
            if Path(name).name != name or name in ("", ".", ".."):
                raise DataError(
                    f"{path}/manifest.json names shard {name!r} outside the cache folder; "
                    f"a cache lists only its own shard files{rebuild}"
                )
            try:
                loaded = load_file(str(path / name))
            except Exception as e:  # missing, truncated or not safetensors
                raise DataError(
                    f"cache shard {path / name} cannot be read ({e}){rebuild}"
                ) from None
            for k, v in loaded.items():
                parts.setdefault(k, []).append(v)
        missing = [k for k in (*_KINDS, "label") if k not in parts]
        if missing:
            raise DataError(f"{path} has no {', '.join(missing)} entries{rebuild}")
        try:
            self.tensors = {k: torch.cat(v) for k, v in parts.items()}
        except RuntimeError as e:
            raise DataError(f"{path} holds shards of different shapes ({e}){rebuild}") from None
        if len({len(v) for v in self.tensors.values()}) != 1 or not len(self.tensors["label"]):
            raise DataError(f"{path} holds no entries or entries of unequal counts{rebuild}")
        self.classes = self.manifest.get("classes")

    def __len__(self) -> int:
        return len(self.tensors["label"])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {k: v[index] for k, v in self.tensors.items()}

    def batch(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Entries at `indices` stacked, latents as float32."""
        out = {k: v[indices] for k, v in self.tensors.items()}
        for k in _KINDS:
            out[k] = out[k].float()
        return out

    def latents(self, batch: dict[str, torch.Tensor], kind: str) -> TriplaneLatent:
        """The `kind` ("prev", "target" or "uncond") latents of a `batch()` as planes."""
        return TriplaneLatent.unpack(batch[kind], self.shape)
