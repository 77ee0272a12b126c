"""Every command shown in README.md and docs/*.md runs, on tiny settings, so the docs cannot rot.

Commands are taken from ```bash blocks (lines starting with `pvdm` or `torchrun`) and run in
order, one shared temporary folder per document (later commands use what earlier ones wrote).
To fit a CPU test they are changed only in size, never in kind:
- dataset and file names the docs use are mapped to the shared fixtures (`data/UCF-101` ->
  `../shared/data/ucf_mini/UCF-101`, `data/SkyTimelapse` -> sky_mini, `my_video.mp4` -> a real
  mp4, official `.pth` files -> the golden official weights with their small configs);
- training gets `--max-steps 2` and a tiny model (or, with `--init`, the initial model's own
  architecture), random-weight VGG16/I3D/C3D files stand in for the pretrained detectors;
- sample counts, sampler steps and process counts are cut (`--num 2`, `--steps 2`, 2 processes);
- `pvdm demo` runs in tests/test_demo_report.py, `pvdm serve` in tests/test_serve_app.py; a
  multi-node torchrun line is only parsed.
Python blocks are compiled and their imports checked.
"""

from __future__ import annotations

import json
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from train_helpers import ROOT, SHARED, TINY_AE, TINY_DM, pvdm_env

from pvdm.cli import build_parser

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
GOLDEN = SHARED / "golden" / "official"


def doc_commands(path: Path) -> list[str]:
    """The shell commands of a document's ```bash blocks, continuation lines joined."""
    commands, in_block, current = [], False, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_block = line.strip() in ("```bash", "```sh")
            continue
        if not in_block:
            continue
        text = line.strip()
        current = f"{current} {text}" if current else text
        if current.endswith("\\"):
            current = current[:-1].strip()
            continue
        cmd = current.split("#")[0].strip() if not current.startswith("#") else ""
        current = ""
        if cmd.startswith(("pvdm ", "torchrun ")):
            commands.append(cmd)
    return commands


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def _pvdm_argv(argv: list[str]) -> list[str]:
    """The pvdm arguments of a `pvdm ...` or `torchrun ... -m pvdm [--] ...` command."""
    if argv[0] == "pvdm":
        return argv[1:]
    rest = argv[argv.index("pvdm") + 1 :]
    return rest[1:] if rest and rest[0] == "--" else rest


class Workspace:
    """The temporary folder one document's commands share, with the fixture files they need."""

    def __init__(self, root: Path):
        self.root = root
        self.weights = root / "_weights"
        self.weights.mkdir(parents=True)
        self._vgg = self._i3d = self._c3d = None
        self.paths = {
            "data/UCF-101": str(SHARED / "data" / "ucf_mini" / "UCF-101"),
            "data/SkyTimelapse": str(SHARED / "data" / "sky_mini"),
            "my_video.mp4": str(SHARED / "data" / "clips" / "mmaction2_test.mp4"),
        }
        self.small_configs: dict[str, str] = {}

    def vgg(self) -> str:
        if self._vgg is None:
            from test_lpips_model import random_vgg16_state

            self._vgg = self.weights / "vgg16-397923af.pth"
            torch.save(random_vgg16_state(), self._vgg)
        return str(self._vgg)

    def i3d(self) -> str:
        if self._i3d is None:
            from eval_helpers import random_i3d_state

            self._i3d = self.weights / "i3d_pretrained_400.pt"
            torch.save(random_i3d_state(), self._i3d)
        return str(self._i3d)

    def c3d(self) -> str:
        if self._c3d is None:
            from test_metrics_inception_score import CONVS, FCS

            rng = np.random.default_rng(0)
            arrays = {}
            for name, (c_in, c_out) in CONVS.items():
                std = (2.0 / (c_in * 27)) ** 0.5
                arrays[f"{name}/W"] = (rng.standard_normal((c_out, c_in, 3, 3, 3)) * std).astype(
                    "f4"
                )
                arrays[f"{name}/b"] = np.zeros(c_out, "f4")
            for name, (n_in, n_out) in FCS.items():
                arrays[f"{name}/W"] = rng.standard_normal((n_out, n_in), "f4") * (2.0 / n_in) ** 0.5
                arrays[f"{name}/b"] = np.zeros(n_out, "f4")
            self._c3d = self.weights / "conv3d_deepnetA_ucf.npz"
            np.savez(self._c3d, **arrays)
        return str(self._c3d)

    def official_pth(self, name: str) -> str:
        """Golden official weights standing in for a released checkpoint, and their YAML."""
        kind = "autoencoder" if "_ae" in name else "unet"
        golden = GOLDEN / f"{kind}_small.safetensors"
        if not golden.is_file():
            pytest.skip(f"golden files absent: {golden}")
        from safetensors.torch import load_file

        state = {k[6:]: v.float() for k, v in load_file(golden).items() if k.startswith("state.")}
        path = self.weights / name.replace("/", "_")
        torch.save(state, path)
        configs = json.loads((GOLDEN / "configs.json").read_text())["configs"]
        if kind == "autoencoder":
            ae = configs["autoencoder_small"]
            block = {
                "model": {"params": {"embed_dim": ae["embed_dim"], "ddconfig": ae["ddconfig"]}}
            }
        else:
            block = {"model": {"params": {"unet_config": configs["unet_small"]}}}
        yaml_path = self.weights / f"{kind}.yaml"
        yaml_path.write_text(yaml.safe_dump(block))
        self.small_configs[kind] = str(yaml_path)
        return str(path)


def _value(args: list[str], flag: str) -> str | None:
    return args[args.index(flag) + 1] if flag in args else None


def _replace(args: list[str], flag: str, value: str) -> list[str]:
    if flag in args:
        args = list(args)
        args[args.index(flag) + 1] = value
        return args
    return [*args, flag, value]


def shrink(args: list[str], ws: Workspace) -> list[str]:
    """The same pvdm command on fixture data and tiny settings (see the module docstring)."""
    args = [ws.paths.get(a, a) for a in args]
    cmd = args[0]
    if cmd == "convert":
        args = [ws.official_pth(a) if a.endswith(".pth") else a for a in args]
        if "--autoencoder" in args:
            args += ["--ae-config", ws.small_configs["autoencoder"]]
        if "--unet" in args:
            args += ["--unet-config", ws.small_configs["unet"]]
    elif cmd == "train-autoencoder":
        init = _value(args, "--init")
        model = (
            _init_model_overrides(ws.root / init)
            if init
            else [s for s in TINY_AE if s.startswith("model.")]
        )
        res, frames = _res_frames(model)
        sets = [
            *model, f"data.resolution={res}", f"data.frames={frames}", "data.num_workers=0",
            "train.batch_size=2", "train.grad_accum=1", "train.precision=fp32",
            "train.eval_every=1", "train.tensorboard=false", "loss.guard_clips=1", "loss.disc_ndf=8",
            f"loss.vgg_weights={ws.vgg()}", f"loss.lpips_weights={SHARED / 'weights/lpips/v0.1_vgg.pth'}",
        ]  # fmt: skip
        args = _replace(args, "--max-steps", "2") + [x for s in sets for x in ("--set", s)]
    elif cmd == "train-diffusion":
        sets = [
            *[s for s in TINY_DM if s.startswith("model.")], "data.num_workers=0",
            "train.batch_size=2", "train.tensorboard=false", "train.preview_every=0",
        ]  # fmt: skip
        args = _replace(args, "--max-steps", "2") + [x for s in sets for x in ("--set", s)]
    elif cmd in ("sample", "continue"):
        if "--steps" in args:
            args = _replace(args, "--steps", "2")
        if "--num" in args:
            args = _replace(args, "--num", "2")
        if "--frames" in args and int(_value(args, "--frames")) > 32:
            args = _replace(args, "--frames", "24")
    elif cmd == "eval":
        metrics = _value(args, "--metrics") or ""
        args = _replace(args, "--num", "10" if "isv" in metrics else "2")
        args = [*args, "--i3d", ws.i3d(), "--steps", "2", "--batch-size", "2", "--workers", "0"]
        if "isv" in metrics:
            args += ["--c3d", ws.c3d(), "--c3d-mean", str(SHARED / "weights/c3d/mean2.npz")]
        if "recon" in metrics:
            args += ["--vgg", ws.vgg(), "--lpips", str(SHARED / "weights/lpips/v0.1_vgg.pth")]
    elif cmd == "data" and args[1] == "preview":
        args = _replace(_replace(args, "--resolution", "32"), "--num", "2")
    return args


def _init_model_overrides(path: Path) -> list[str]:
    from pvdm.models import read_header
    from pvdm.runs import resolve_snapshot

    config = read_header(resolve_snapshot(path))["config"]
    return [
        f"model.{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in config.items()
    ]


def _res_frames(model_sets: list[str]) -> tuple[int, int]:
    values = dict(s.split("=", 1) for s in model_sets)
    return int(values["model.resolution"]), int(values["model.frames"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_command(command: str, ws: Workspace) -> None:
    argv = shlex.split(command)
    pvdm_args = _pvdm_argv(argv)
    build_parser().parse_args(pvdm_args)  # every documented flag exists and parses
    if pvdm_args[0] == "demo":
        return  # run for real by tests/test_demo_report.py
    if pvdm_args[0] == "serve":
        return  # a server that runs until stopped: run for real by tests/test_serve_app.py
    if argv[0] == "torchrun" and "--nnodes" in argv:
        return  # multi-node: parsing is what can be checked on one machine
    args = shrink(pvdm_args, ws)
    if argv[0] == "torchrun":
        launcher = [
            sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
            "--master_addr", "127.0.0.1", "--master_port", str(_free_port()), "-m", "pvdm", "--",
        ]  # fmt: skip
    else:
        launcher = [sys.executable, "-m", "pvdm"]
    proc = subprocess.run(
        [*launcher, *args], cwd=ws.root, env=pvdm_env(), capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{command}\n-> {shlex.join(args)}\n{proc.stdout}\n{proc.stderr}"


def test_every_doc_has_commands() -> None:
    found = {p.name: len(doc_commands(p)) for p in DOCS}
    assert found.get("training.md", 0) >= 10 and found.get("evaluation.md", 0) >= 4, found


# Documents whose commands run in one shared folder, in this order (evaluation.md evaluates the
# runs the training walkthrough made).
WALKTHROUGHS = {
    "training-and-evaluation": ["docs/training.md", "docs/evaluation.md"],
    "official-checkpoints": ["docs/official-checkpoints.md"],
    "readme": ["README.md"],
}


def test_every_doc_with_commands_is_walked_through() -> None:
    walked = {name for docs in WALKTHROUGHS.values() for name in docs}
    with_commands = {str(p.relative_to(ROOT)) for p in DOCS if doc_commands(p)}
    assert with_commands <= walked, with_commands - walked


@pytest.mark.slow
@pytest.mark.parametrize("walkthrough", list(WALKTHROUGHS))
def test_doc_commands_run(walkthrough: str, tmp_path) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"shared fixtures absent: {SHARED}")
    ws = Workspace(tmp_path)
    for doc in WALKTHROUGHS[walkthrough]:
        for command in doc_commands(ROOT / doc):
            run_command(command, ws)


@pytest.mark.parametrize("doc", [p for p in DOCS if python_blocks(p)], ids=lambda p: p.name)
def test_doc_python_blocks_compile_and_import(doc: Path) -> None:
    import importlib

    for block in python_blocks(doc):
        compile(block, str(doc), "exec")
        pattern = r"^from (\S+) import (\([^)]*\)|.+)$"
        for module, names in re.findall(pattern, block, flags=re.M):
            mod = importlib.import_module(module)
            for name in names.strip("()").replace("\n", " ").split(","):
                if name.strip():
                    assert hasattr(mod, name.strip()), f"{doc.name}: {module} has no {name}"
