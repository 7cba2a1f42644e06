import json

import pytest
import torch

from napari_amodal.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_metadata,
    save_checkpoint,
)


def test_round_trip_with_config(tmp_path):
    lin = torch.nn.Linear(3, 2)
    p = save_checkpoint(tmp_path / "m", lin.state_dict(), {"name": "lean", "k": 4}, {"iteration": 7})
    assert p.suffix == ".safetensors" and p.with_suffix(".json").exists()
    tensors, config, extra = load_checkpoint(p)
    assert config == {"name": "lean", "k": 4} and extra == {"iteration": 7}
    torch.testing.assert_close(tensors["weight"], lin.weight.detach())
    assert json.loads(p.with_suffix(".json").read_text())["format_version"] == 1


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    p = save_checkpoint(tmp_path / "m.safetensors", {"w": torch.ones(2)}, {"v": 1})
    before = p.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(p, {"w": torch.ones(2)}, {"v": object()})  # config not JSON-able
    import safetensors.torch

    def crash_mid_write(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash_mid_write)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(p, {"w": torch.zeros(2)}, {"v": 2})
    assert p.read_bytes() == before
    assert read_metadata(p)["config"] == {"v": 1}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.json", "m.safetensors"]


def test_foreign_and_pickle_files_are_refused(tmp_path):
    bad = tmp_path / "x.safetensors"
    torch.save({"w": torch.ones(1)}, bad)  # a pickle, never unpickled by us
    with pytest.raises(CheckpointError, match="not a safetensors"):
        load_checkpoint(bad)
    from safetensors.torch import save_file

    save_file({"w": torch.ones(1)}, str(tmp_path / "y.safetensors"))
    with pytest.raises(CheckpointError, match="not a napari-amodal"):
        read_metadata(tmp_path / "y.safetensors")
    with pytest.raises(FileNotFoundError):
        read_metadata(tmp_path / "missing.safetensors")
