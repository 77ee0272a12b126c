"""Where code runs: devices, mixed precision and `torchrun` process groups, below every layer.

The same command runs single-process without torchrun. Rank 0 alone writes files; every rank
computes the same global schedule. Training, sampling and evaluation all use these helpers, so
inference never imports the training code. This is the one module that talks to
`torch.distributed` (`tests/test_import_layers.py` checks it): the collectives below are no-ops
in a single process and move tensors to `comm_device()` (the GPU under NCCL, else the CPU).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.distributed as dist
from torch import nn

from pvdm.errors import ConfigError


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: rank, world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_device(name: str, where: str = "--device") -> None:
    """Refuse a device name torch does not know (e.g. 'tpu') with one sentence."""
    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"{where} '{name}' is not a device; use auto, cpu, cuda, cuda:N or mps"
        ) from None


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """`auto` picks this rank's CUDA device when there is one, else the CPU; an unknown name
    or a missing CUDA device is a ConfigError."""
    check_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device 'mps' was asked for but MPS is not available; use cpu")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"device '{name}' was asked for but this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
        if device.index is None:
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    return device


def init_distributed(device: str = "auto", timeout_min: float = 30.0) -> DistInfo:
    """Join the process group torchrun set up (env RANK/WORLD_SIZE), or run as one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if dev.type == "cpu" and local_world > 1 and "OMP_NUM_THREADS" not in os.environ:
        # several processes share the cores: more threads than cores makes OpenMP crawl
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            timeout=datetime.timedelta(minutes=timeout_min),
            device_id=dev if dev.type == "cuda" else None,
        )
    if dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def shutdown_distributed() -> None:
    """Leave the process group if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of torch.distributed, or (0, 1) without it."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _several_ranks() -> bool:
    return rank_and_world()[1] > 1


def comm_device() -> torch.device:
    """The device collectives take tensors on: this rank's GPU under NCCL, else the CPU (gloo)."""
    if dist.get_backend() == "nccl":  # NCCL moves CUDA tensors only
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce(tensor: torch.Tensor, op: Literal["sum", "max", "min"] = "sum") -> torch.Tensor:
    """Reduce a tensor (on any device) over ranks in place and return it; no-op in one process.

    A tensor that is not on `comm_device()` travels through a copy there and back.
    """
    if not _several_ranks():
        return tensor
    reduce_op = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}[op]
    device = comm_device()
    if tensor.device == device:
        dist.all_reduce(tensor, op=reduce_op)
        return tensor
    moved = tensor.to(device)
    dist.all_reduce(moved, op=reduce_op)
    return tensor.copy_(moved)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place and return it (no-op in a single process)."""
    return all_reduce(tensor, "sum")


def any_rank(flag: bool) -> bool:
    """True on every rank if it is true on any rank (an all-reduce MAX; used for stop requests)."""
    return bool(all_reduce(torch.tensor([int(flag)]), "max").item())


def from_rank0(flag: bool) -> bool:
    """Rank 0's `flag` on every rank (a broadcast; itself in one process)."""
    if not _several_ranks():
        return flag
    t = torch.tensor([int(flag)], device=comm_device())
    dist.broadcast(t, src=0)
    return bool(t.item())


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate a [N_r, ...] tensor from every rank (rank order); N_r may differ per rank."""
    if not _several_ranks():
        return rows
    device = comm_device()
    world = rank_and_world()[1]
    n = torch.tensor([rows.shape[0]], dtype=torch.long, device=device)
    counts = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    counts = [int(c.item()) for c in counts]
    padded = torch.zeros((max(counts), *rows.shape[1:]), dtype=rows.dtype, device=device)
    padded[: rows.shape[0]] = rows.to(device)
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[:c] for p, c in zip(parts, counts)]).to(rows.device)


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU if it has none)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def full_fp32_convs(device: torch.device) -> Iterator[None]:
    """Run cuDNN float32 convolutions in full float32 (no TF32) inside the block.

    TF32 convolutions (10 mantissa bits) are PyTorch's default on recent GPUs; they move metric
    features far more than float32 rounding does, so reference-precision features turn them
    off. A no-op on other devices.
    """
    if device.type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9
        owner, name, value = conv, "fp32_precision", "ieee"
    else:
        owner, name, value = torch.backends.cudnn, "allow_tf32", False
    previous = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, previous)


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for bf16/fp16, nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on `device` seeded with `seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def local_batch_size(global_batch: int, world_size: int) -> int:
    """The per-rank batch: the global batch divided by the world size, which must divide it."""
    if global_batch % world_size:
        raise ConfigError(
            f"train.batch_size={global_batch} is the global batch and must be divisible by the "
            f"number of processes ({world_size})"
        )
    return global_batch // world_size
