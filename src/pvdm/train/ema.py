"""Exponential moving average of model weights, as the official PVDM trainer keeps it.

Official recipe (`models/ema.py::LitEma`, `tools/trainer.py`): decay 0.9999 with the warm-up
`min(decay, (1 + n) / (10 + n))`, where n counts the updates made so far (incremented first),
applied every 25 optimizer steps. The official loop updates after iterations 25, 50, ... counted
from 0 (i.e. after the 26th, 51st, ... step); here the update follows steps 25, 50, ... counted
from 1, one step earlier, which changes nothing of substance.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """A frozen copy of a model whose weights track the model's with an exponential average."""

    def __init__(
        self, model: nn.Module, decay: float = 0.9999, every: int = 25, warmup: bool = True
    ):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        if every < 1:
            raise ValueError(f"EMA update interval must be >= 1, got {every}")
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay
        self.every = every
        self.warmup = warmup
        self.num_updates = 0

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if not self.warmup:
            return self.decay
        n = self.num_updates + 1
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards `model`'s current weights; copy its buffers."""
        decay = self.current_decay()
        self.num_updates += 1
        source = dict(model.named_parameters())
        for name, p in self.model.named_parameters():
            p.lerp_(source[name].detach().to(p.dtype), 1.0 - decay)
        source_buffers = dict(model.named_buffers())
        for name, b in self.model.named_buffers():
            b.copy_(source_buffers[name])

    def maybe_update(self, model: nn.Module, step: int) -> bool:
        """Update after optimizer step number `step` (counted from 1) when it is due."""
        if step > 0 and step % self.every == 0:
            self.update(model)
            return True
        return False

    def state_dict(self) -> dict:
        """Weights and update count, for the training state."""
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` returned."""
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
