"""Finding models by name, checksums of the bundled model, devices."""

import pytest

import napari_amodal.models as models
from napari_amodal.checkpoint import sha256
from tiny import save_untrained


@pytest.fixture
def fake_bundled(tmp_path, monkeypatch):
    d = tmp_path / "pkg_models"
    d.mkdir()
    path = save_untrained(d / "bundled.safetensors")
    (d / "bundled.sha256").write_text(f"{sha256(path)}  bundled.safetensors\n")
    monkeypatch.setattr(models, "BUNDLED_DIR", d)
    monkeypatch.setenv("NAPARI_AMODAL_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("NAPARI_AMODAL_MODELS", raising=False)
    return path


def test_bundled_loads_by_name_after_checksum(fake_bundled):
    model, config, _ = models.load_model("bundled")
    assert config.name == "tiny" and not model.training


def test_tampered_bundled_model_is_refused(fake_bundled):
    data = bytearray(fake_bundled.read_bytes())
    data[-1] ^= 0xFF
    fake_bundled.write_bytes(bytes(data))
    with pytest.raises(models.ChecksumError, match="checksum mismatch"):
        models.load_model("bundled")


def test_offline_model_folder_from_environment(fake_bundled, tmp_path, monkeypatch):
    site = tmp_path / "site_models"
    site.mkdir()
    path = save_untrained(site / "lab_v2.safetensors")
    monkeypatch.setenv("NAPARI_AMODAL_MODELS", str(site))
    assert set(models.list_models()) >= {"bundled", "lab_v2"}
    assert models.resolve_model("lab_v2") == site / "lab_v2.safetensors"
    with pytest.raises(models.ChecksumError, match="no checksum file lab_v2.sha256"):
        models.load_model("lab_v2")  # a shared folder's model must carry its checksum
    (site / "lab_v2.sha256").write_text(f"{sha256(path)}  lab_v2.safetensors\n")
    models.load_model("lab_v2")
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(models.ChecksumError, match="checksum mismatch"):
        models.load_model("lab_v2")


def test_a_checksum_beside_any_model_is_checked(tmp_path):
    path = save_untrained(tmp_path / "mine.safetensors")
    models.load_model(path)  # no record: a user's own file loads as it is
    path.with_suffix(".sha256").write_text("0" * 64 + "  mine.safetensors\n")
    with pytest.raises(models.ChecksumError, match="checksum mismatch"):
        models.load_model(path)


def test_wrong_shape_weights_are_a_clear_error(tmp_path):
    from napari_amodal.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

    path = save_untrained(tmp_path / "m.safetensors")
    tensors, config, extra = load_checkpoint(path)
    key = next(k for k, v in tensors.items() if v.ndim == 4)
    tensors[key] = tensors[key][:, :1].clone()
    bad = save_checkpoint(tmp_path / "bad.safetensors", tensors, config, extra)
    with pytest.raises(CheckpointError, match="bad.safetensors.*do not fit"):
        models.load_model(bad)


def test_user_models_are_found(fake_bundled):
    models.user_model_dir().mkdir(parents=True)
    save_untrained(models.user_model_dir() / "finetuned.safetensors")
    assert "finetuned" in models.list_models()


def test_unknown_model_names_the_places_searched(fake_bundled):
    with pytest.raises(models.ModelNotFoundError, match="no model named 'nope'.*known: bundled"):
        models.resolve_model("nope")
    with pytest.raises(models.ModelNotFoundError, match="does not exist"):
        models.resolve_model("/no/such/model.safetensors")


def test_shape_checkpoint_is_not_a_detector(tmp_path):
    from napari_amodal.checkpoint import CheckpointError, save_checkpoint
    from tiny import tiny_config

    p = save_checkpoint(tmp_path / "s.safetensors", {}, {"kind": "shape", "model": tiny_config().to_dict()})
    with pytest.raises(CheckpointError, match="not a segmentation model"):
        models.load_model(p)


def test_devices():
    assert models.pick_device("auto") in ("cpu", "cuda", "mps")
    assert models.available_devices()[:2] == ["auto", "cpu"]
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            models.pick_device("cuda")
    with pytest.raises(ValueError, match="unknown device 'cudax'"):
        models.pick_device("cudax")
