import numpy as np

from napari_amodal.data.coco import read_coco
from napari_amodal.data.shapes import render_shapes_image, write_shapes_dataset


def test_shapes_follow_the_protocol():
    rng = np.random.default_rng(1)
    counts = []
    for _ in range(40):
        image, inst = render_shapes_image(rng)
        assert image.shape == (224, 224, 3) and image.dtype == np.uint8
        assert 1 <= len(inst) <= 9
        assert set(inst.labels.tolist()) <= {1, 2, 3}
        # the last-painted shape is fully visible, and visible parts never overlap
        np.testing.assert_array_equal(inst.visible[-1], inst.masks[-1])
        assert inst.visible.sum(0).max() <= 1
        assert (inst.visible <= inst.masks).all()
        # each visible pixel shows its shape's single colour
        for m in inst.visible:
            if m.any():
                assert len(np.unique(image[m], axis=0)) == 1
        counts.append(len(inst))
    assert max(counts) > 5 and min(counts) < 4  # the count really varies


def test_later_shapes_occlude_earlier_ones():
    rng = np.random.default_rng(3)
    hidden = 0
    for _ in range(30):
        _, inst = render_shapes_image(rng)
        hidden += int((inst.masks & ~inst.visible).sum())
    assert hidden > 0


def test_dataset_is_seeded_and_splits_are_independent(tmp_path):
    a = write_shapes_dataset(tmp_path / "a", n_train=6, n_test=3, seed=5)
    b = write_shapes_dataset(tmp_path / "b", n_train=6, n_test=5, seed=5)
    c = write_shapes_dataset(tmp_path / "c", n_train=6, n_test=3, seed=6)
    fa, fb, fc = read_coco(a["train"]), read_coco(b["train"]), read_coco(c["train"])
    assert len(fa) == 6 and len(read_coco(a["test"])) == 3
    for x, y in zip(fa, fb):
        np.testing.assert_array_equal(x.masks, y.masks)
    assert any(x.masks.shape != y.masks.shape or (x.masks != y.masks).any() for x, y in zip(fa, fc))
    assert (tmp_path / "a" / fa[0].file_name).exists()


def test_shapes_dataset_feeds_the_training_loader(tmp_path):
    """The PNG frames written by ``synth shapes`` load through AmodalDataset (Table II trains on them)."""
    import imageio.v3 as iio
    import torch

    from napari_amodal.data.dataset import AmodalDataset

    paths = write_shapes_dataset(tmp_path, n_train=2, n_test=1, seed=2)
    frames = read_coco(paths["train"])
    ds = AmodalDataset([paths["train"]])
    image, target = ds[0]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32
    rendered = iio.imread(tmp_path / frames[0].file_name)
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), rendered / 255.0, atol=1e-6)
    np.testing.assert_array_equal(target["masks"].numpy().astype(bool), frames[0].masks)

