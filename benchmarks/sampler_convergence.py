"""How many steps each sampler needs on a trained model.

Two measurements, both from fixed seeds:
1. Convergence: DDIM (eta 0) and DPM-Solver++(2M) solve the same probability-flow ODE, so the
   relative L2 distance of an S-step sample's latent to a 1000-step DDIM sample (no x0 clamping,
   which would change the ODE) shows how far S steps are from converged.
2. Quality with the settings people sample with (x0 clamped to [-1, 1]; DDIM with the official
   eta = 1): the Frechet distance between generated latents and the real latents of the run's
   latent cache (flattened packed latents), per sampler and step count. No pretrained detector
   is needed, and the latent space is where the samplers differ. DDIM is measured with eta 0
   (the same ODE as DPM-Solver) and eta 1 (ancestral, the official setting).

    python benchmarks/sampler_convergence.py --model runs/sky-dm
    (writes benchmarks/results/sampler_convergence.json; --cache if the run did not train on one)
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="diffusion run folder")
    parser.add_argument(
        "--cache", type=Path, help="latent cache of real latents (default: the run's)"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/sampler_convergence.json"
    )
    parser.add_argument("--num-convergence", type=int, default=16)
    parser.add_argument("--num-quality", type=int, default=384)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ddim", default="20,50,100,200")
    parser.add_argument("--dpm", default="10,15,20,25,50")
    args = parser.parse_args()

    import yaml

    from pvdm.diffusion.cache import LatentCache
    from pvdm.diffusion.pipeline import PVDMPipeline
    from pvdm.diffusion.samplers import SAMPLERS, make_denoiser
    from pvdm.metrics import frechet_distance

    pipe = PVDMPipeline.from_pretrained(args.model)
    cache = args.cache or Path(
        yaml.safe_load((args.model / "config.yaml").read_text())["data"]["path"]
    )
    real = LatentCache(cache)
    real_latents = torch.cat([real.tensors["target"], real.tensors["uncond"]]).float().flatten(1)

    denoiser = make_denoiser(pipe.unet)

    def sample(
        sampler: str, steps: int, eta: float, clip: bool, num: int
    ) -> tuple[torch.Tensor, float]:
        out, start = [], time.perf_counter()
        for i in range(0, num, args.batch_size):
            seeds = list(range(i, min(i + args.batch_size, num)))
            gens = [torch.Generator().manual_seed(10_000 + s) for s in seeds]
            z = SAMPLERS[sampler].fn(
                denoiser, pipe._noise(seeds, 0), pipe.schedule, steps, eta=eta, generator=gens,
                clip_x0=clip,
            )  # fmt: skip
            out.append(z.pack())
        return torch.cat(out), time.perf_counter() - start

    convergence, quality = [], []
    with torch.no_grad():
        n = args.num_convergence
        ref, ref_sec = sample("ddim", 1000, 0.0, False, n)
        for sampler, grid in (("ddim", args.ddim), ("dpm", args.dpm)):
            for steps in (int(s) for s in grid.split(",")):
                z, sec = sample(sampler, steps, 0.0, False, n)
                err = ((z - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).mean()
                row = {
                    "sampler": sampler,
                    "steps": steps,
                    "latent_rel_error": float(err),
                    "seconds": sec,
                }
                print("convergence", json.dumps(row), flush=True)
                convergence.append(row)
        for sampler, grid, eta in (
            ("ddim", args.ddim, 0.0),
            ("ddim", args.ddim, 1.0),
            ("dpm", args.dpm, 0.0),
        ):
            for steps in (int(s) for s in grid.split(",")):
                z, sec = sample(sampler, steps, eta, True, args.num_quality)
                fd = frechet_distance(z.flatten(1).double(), real_latents.double())
                row = {
                    "sampler": sampler,
                    "steps": steps,
                    "eta": eta,
                    "latent_fd": float(fd),
                    "seconds": sec,
                }
                print("quality", json.dumps(row), flush=True)
                quality.append(row)
    report = {
        "benchmark": "sampler_convergence",
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "model": str(args.model),
        "convergence": {
            "reference": {
                "sampler": "ddim",
                "steps": 1000,
                "eta": 0.0,
                "clip_x0": False,
                "seconds": ref_sec,
            },
            "num_samples": args.num_convergence,
            "results": convergence,
        },
        "quality": {
            "metric": "Frechet distance of packed latents to the latent cache's real latents",
            "num_generated": args.num_quality,
            "num_real": len(real_latents),
            "results": quality,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
