import pytest
import torch

from napari_amodal.data.dataset import AmodalDataset, Augment, collate
from napari_amodal.data.sample import EMBRYO_GT, sample_path


def test_samples_follow_the_contract():
    ds = AmodalDataset([sample_path(EMBRYO_GT)])
    image, target = ds[len(ds) - 1]
    assert image.shape == (3, 500, 500) and image.dtype == torch.float32
    assert 0 <= image.min() and image.max() <= 1
    n = len(target["boxes"])
    assert n == len(ds.instances(len(ds) - 1)) and n >= 6
    assert target["masks"].shape == (n, 500, 500) and target["masks"].dtype == torch.uint8
    assert (target["boxes"][:, 2:] > target["boxes"][:, :2]).all()
    occ = target["occlusion"]
    assert torch.equal(occ.bool(), target["masks"].sum(0) >= 2)
    images, targets = collate([ds[0], ds[1]])
    assert len(images) == len(targets) == 2


def test_augmentation_moves_masks_with_the_image_and_is_seeded():
    ds = AmodalDataset([sample_path(EMBRYO_GT)], augment=Augment(), seed=3)
    plain = AmodalDataset([sample_path(EMBRYO_GT)])
    a1, t1 = ds[5]
    a2, t2 = ds[5]
    assert torch.equal(a1, a2) and torch.equal(t1["masks"], t2["masks"])
    _, t0 = plain[5]
    # flips / rotations are exact: the same areas and the same number of cells
    assert sorted(t1["masks"].sum((1, 2)).tolist()) == sorted(t0["masks"].sum((1, 2)).tolist())
    ds.epoch = 1
    a3, _ = ds[5]
    assert not torch.equal(a1, a3)


def test_frames_filter_and_missing_image(tmp_path):
    ds = AmodalDataset([sample_path(EMBRYO_GT)], frames={("embryo_sample.tif", 3)})
    assert len(ds) == 1 and ds.instances(0).frame == 3
    with pytest.raises(ValueError, match="no frames"):
        AmodalDataset([sample_path(EMBRYO_GT)], frames=set())
    import shutil

    shutil.copy(sample_path(EMBRYO_GT), tmp_path / "gt.json")
    with pytest.raises(FileNotFoundError, match="embryo_sample.tif"):
        AmodalDataset([tmp_path / "gt.json"])[0]


@pytest.mark.parametrize("dtype", ["uint16", "float32", "int32"])
def test_training_reads_any_dtype_through_the_one_normaliser(tmp_path, dtype):
    """Fine-tuning and training crashed on non-8-bit stacks like segmentation did."""
    import numpy as np
    import tifffile

    from napari_amodal.data.coco import read_amodal, write_coco
    from napari_amodal.normalize import to_model_input

    stack = tifffile.imread(sample_path("embryo_sample.tif"))[:2]
    frames, cats = read_amodal(sample_path(EMBRYO_GT))
    other = (stack.astype(np.float64) * 16 + 3).astype(dtype)
    tifffile.imwrite(tmp_path / "s.tif", other)
    for f in frames[:2]:
        f.file_name = "s.tif"
    write_coco(tmp_path / "s.json", frames[:2], cats)
    image, target = AmodalDataset([tmp_path / "s.json"])[1]
    assert image.dtype == torch.float32 and len(target["boxes"]) == len(frames[1])
    np.testing.assert_array_equal(image.numpy(), to_model_input(other[1]))
