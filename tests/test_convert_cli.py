"""`pvdm convert official`: help, an end-to-end conversion of official weights, clean refusals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from pvdm.cli import main
from pvdm.models import TriplaneAutoencoder, TriplaneUNet, load_model
from pvdm.models.latent import LatentShape, TriplaneLatent

GOLDEN = Path(__file__).resolve().parents[1] / ".." / "shared" / "golden" / "official"

UNET_LATENT = LatentShape(4, 16, 32, 32)  # the golden files' latents (C, T', H', W')


def _golden(name: str) -> dict[str, torch.Tensor]:
    if not (GOLDEN / name).is_file():
        pytest.skip(
            f"golden vectors not found at {GOLDEN / name} (the shared materials are absent)"
        )
    from safetensors.torch import load_file

    return load_file(str(GOLDEN / name))


def _write_pth(golden: dict[str, torch.Tensor], path: Path) -> Path:
    state = {
        k.removeprefix("state."): v.float() for k, v in golden.items() if k.startswith("state.")
    }
    torch.save(state, path)
    return path


def test_help(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["convert", "official", "--help"])
    assert info.value.code == 0
    assert "--autoencoder" in capsys.readouterr().out


def test_converts_official_checkpoints_and_yaml_configs(tmp_path, capsys) -> None:
    ae_golden = _golden("autoencoder_small.safetensors")
    unet_golden = _golden("unet_small.safetensors")
    configs = json.loads((GOLDEN / "configs.json").read_text())["configs"]
    # the official YAML nesting: model.params.{embed_dim, ddconfig} / model.params.unet_config
    ae_cfg = configs["autoencoder_small"]
    ae_yaml = {
        "model": {"params": {"embed_dim": ae_cfg["embed_dim"], "ddconfig": ae_cfg["ddconfig"]}}
    }
    unet_yaml = {
        "model": {"params": {"linear_start": 0.0015, "unet_config": configs["unet_small"]}}
    }
    (tmp_path / "ae.yaml").write_text(yaml.safe_dump(ae_yaml))
    (tmp_path / "ldm.yaml").write_text(yaml.safe_dump(unet_yaml))
    ae_pth = _write_pth(ae_golden, tmp_path / "model_last.pth")
    unet_pth = _write_pth(unet_golden, tmp_path / "ema_model_0.pth")
    args = f"--autoencoder {ae_pth} --ae-config {tmp_path / 'ae.yaml'} --unet {unet_pth} "
    args += f"--unet-config {tmp_path / 'ldm.yaml'} --out {tmp_path / 'out'}"
    rc = main(["convert", "official", *args.split()])
    assert rc == 0
    assert "autoencoder (" in capsys.readouterr().out
    ae = load_model(tmp_path / "out" / "autoencoder")
    unet = load_model(tmp_path / "out" / "unet")
    assert isinstance(ae, TriplaneAutoencoder) and isinstance(unet, TriplaneUNet)
    with torch.no_grad():
        latent = ae.encode(ae_golden["input.video"]).pack()
        x = TriplaneLatent.unpack(unet_golden["input.latent"], UNET_LATENT)
        eps = unet(x, unet_golden["input.timesteps"]).pack()
    for ours, ref in (
        (latent, ae_golden["output.latent"]),
        (eps, unet_golden["output.eps_uncond"]),
    ):
        assert (ours - ref).norm() / ref.norm() <= 1e-5
    # the converted pair is a pipeline: `pvdm sample` takes it as it is
    samples = tmp_path / "samples"
    args = f"sample --model {tmp_path / 'out'} --num 1 --steps 2 --out {samples} --device cpu"
    assert main(args.split()) == 0
    settings = json.loads((samples / "settings.json").read_text())
    assert settings["frames"] == 16 and (samples / "sample-0000.mp4").stat().st_size > 0


def test_default_config_refuses_weights_of_another_size(tmp_path, capsys) -> None:
    # without --ae-config the official 256 x 256 / width 384 architecture is expected
    pth = _write_pth(_golden("autoencoder_small.safetensors"), tmp_path / "small.pth")
    rc = main(["convert", "official", "--autoencoder", str(pth), "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "mis-shaped key(s): encoder.to_patch_embedding.weight (64, 192)" in err
    assert not (tmp_path / "o").exists()


class _Exploit:
    def __reduce__(self):
        return (os.getcwd, ())


def test_malicious_pickle_is_refused(tmp_path, capsys) -> None:
    torch.save({"payload": _Exploit()}, tmp_path / "evil.pth")
    rc = main(["convert", "official", "--unet", str(tmp_path / "evil.pth"), "--out", str(tmp_path)])
    assert rc == 2
    assert "refused to unpickle" in capsys.readouterr().err
