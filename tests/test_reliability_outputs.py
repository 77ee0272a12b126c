"""Sample output folders keep the user's work: earlier samples survive a failed or stopped
run, and two commands never write into one folder at the same time."""

from __future__ import annotations

import json

import pytest
import torch
from serve_helpers import tiny_run

import pvdm.data
from pvdm.cli import main
from pvdm.diffusion.sample_folder import prepare_output_folder, write_samples
from pvdm.runs import run_lock


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_earlier_samples_survive_a_write_that_fails_midway(tmp_path, monkeypatch) -> None:
    out = prepare_output_folder(tmp_path / "out")
    first = torch.full((2, 3, 2, 8, 8), 10, dtype=torch.uint8)
    write_samples(out, first, {"run": 1})
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    written = []
    real_write = pvdm.data.write_video

    def disk_full_at_the_second_video(path, video, **kw):
        if written:
            raise OSError(28, "No space left on device")
        written.append(path)
        return real_write(path, video, **kw)

    monkeypatch.setattr(pvdm.data, "write_video", disk_full_at_the_second_video)
    prepare_output_folder(out)  # the check before sampling removes nothing
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(OSError, match="No space"):
        write_samples(out, torch.zeros(3, 3, 2, 8, 8, dtype=torch.uint8), {"run": 2})
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # whole, no staging left
    assert json.loads((out / "settings.json").read_text())["run"] == 1


def test_a_new_write_replaces_the_earlier_one_entirely(tmp_path) -> None:
    out = prepare_output_folder(tmp_path / "out")
    write_samples(out, torch.zeros(3, 3, 2, 8, 8, dtype=torch.uint8), {"run": 1}, fmt="png")
    (out / ".staging").mkdir()  # what a killed write left
    (out / ".staging" / "sample-0000.mp4").write_bytes(b"half")
    prepare_output_folder(out)
    paths = write_samples(out, torch.zeros(1, 3, 2, 8, 8, dtype=torch.uint8), {"run": 2})
    assert paths == [out / "sample-0000.mp4"] and paths[0].stat().st_size > 100
    assert _names(out) == ["grid.png", "sample-0000.mp4", "settings.json"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_run(tmp_path_factory.mktemp("outputs-model"))


def test_a_second_command_on_the_same_out_is_refused(model, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    args = ["sample", "--model", str(model), "--num", "1", "--steps", "2", "--out", str(out)]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with run_lock(out, "--out"):  # another pvdm process writing there
        assert main(args) == 2
    assert "in use by another pvdm process" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(args) == 0  # free again afterwards
