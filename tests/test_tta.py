import numpy as np
import torch

from helpers import disk_mask
from napari_amodal.instances import FrameInstances
from napari_amodal.segment import Segmenter
from napari_amodal.tta import merge_views, unflip


def _frame(centres, scores, shape=(64, 80), r=8, occlusion=None):
    masks = np.stack([disk_mask(shape, c, r) for c in centres]) if centres else np.zeros((0, *shape), bool)
    return FrameInstances.from_masks(masks, shape=shape, scores=scores, occlusion=occlusion)


def test_unflip_mirrors_masks_boxes_and_occlusion_back():
    occ = np.zeros((64, 80), np.float32)
    occ[:, :10] = 1
    f = unflip(_frame([(20, 10)], [0.7], occlusion=occ))
    assert f.masks[0].sum() > 0 and np.array_equal(f.masks[0], disk_mask((64, 80), (20, 69), 8))
    assert f.boxes[0, 0] > 55 and f.occlusion[:, -10:].all() and not f.occlusion[:, :-10].any()


def test_cells_both_views_find_keep_the_mean_score_the_others_half():
    a = _frame([(20, 20), (40, 60)], [0.9, 0.8])
    b = _frame([(21, 20), (20, 60)], [0.7, 0.6])  # the first is a's first cell moved 1 px
    m = merge_views(a, b)
    assert np.allclose(m.scores, [0.8, 0.4, 0.3])
    assert np.array_equal(m.masks[0], a.masks[0])  # the higher-scored mask of the pair
    assert np.array_equal(m.masks[1], a.masks[1]) and np.array_equal(m.masks[2], b.masks[1])
    b_wins = merge_views(a, _frame([(21, 20)], [0.95]))
    assert np.allclose(b_wins.scores[0], 0.925) and np.array_equal(b_wins.masks[0], disk_mask((64, 80), (21, 20), 8))
    assert len(merge_views(a.select([]), b.select([]))) == 0
    assert np.allclose(merge_views(a, b.select([])).scores, [0.45, 0.4])


class _OrientedModel(torch.nn.Module):
    """One cell at the centre of whatever it sees (score 0.9) and one spurious cell always in
    the left quarter of its input (0.8): a detection that depends on the frame's orientation."""

    def forward(self, images):
        out = []
        for img in images:
            h, w = img.shape[-2:]
            masks = np.stack([disk_mask((h, w), (h // 2, w // 2), 8), disk_mask((h, w), (h // 2, w // 8), 5)])
            out.append({"boxes": torch.zeros(2, 4), "labels": torch.ones(2, dtype=torch.int64),
                        "scores": torch.tensor([0.9, 0.8]), "masks": torch.from_numpy(masks).float()[:, None]})
        return out


def test_test_time_augmentation_drops_a_cell_only_one_orientation_finds():
    stack = np.random.default_rng(0).integers(60, 200, (3, 64, 96)).astype(np.uint8)
    plain = Segmenter(_OrientedModel(), device="cpu")(stack, temporal=False)
    tta = Segmenter(_OrientedModel(), device="cpu", tta=True)(stack, temporal=False)
    assert [len(f) for f in plain] == [2, 2, 2]
    assert [len(f) for f in tta] == [1, 1, 1]
    assert np.allclose(tta[0].scores, 0.9) and np.array_equal(tta[0].masks[0], disk_mask((64, 96), (32, 48), 8))
    low = Segmenter(_OrientedModel(), device="cpu", tta=True, score_threshold=0.3)(stack, temporal=False)
    assert [len(f) for f in low] == [3, 3, 3] and np.allclose(low[0].scores, [0.9, 0.4, 0.4])


def test_segment_tta_on_the_command_line(tmp_path, monkeypatch):
    import tifffile

    from napari_amodal.cli import main
    from napari_amodal.data.coco import read_amodal
    from tiny import save_untrained

    seen = []
    original = Segmenter._detect
    monkeypatch.setattr(Segmenter, "_detect", lambda self, *a: seen.append(self.tta) or original(self, *a))
    model = save_untrained(tmp_path / "tiny.safetensors")
    tifffile.imwrite(tmp_path / "emb.tif", np.random.default_rng(1).integers(0, 255, (2, 80, 96)).astype(np.uint8))
    for flag in ([], ["--tta"]):
        rc = main(["-q", "segment", str(tmp_path / "emb.tif"), "--out", str(tmp_path / "out"), "--model", str(model),
                   "--device", "cpu", "--score-threshold", "0", *flag])
        assert rc == 0 and len(read_amodal(tmp_path / "out" / "emb.json")[0]) == 2
    assert seen == [False, True]  # one batch of 2 frames each run
