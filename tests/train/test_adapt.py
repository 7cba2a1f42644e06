import numpy as np
import pytest

from helpers import disk_mask
from napari_amodal.instances import FrameInstances
from napari_amodal.train.adapt import adapt, trusted_frames
from napari_amodal.train.finetune import FinetuneError

SHAPE = (64, 64)


def _frame(t, cells, scores=None, inferred=None, state="cells"):
    masks = np.stack([disk_mask(SHAPE, c, 8) for c, _ in cells]) if cells else np.zeros((0, *SHAPE), bool)
    return FrameInstances.from_masks(masks, shape=SHAPE, track_ids=[k for _, k in cells], frame=t,
                                     scores=scores, inferred=inferred, meta={"state": state})


A, B, C = ((20, 20), 1), ((40, 40), 2), ((20, 45), 3)


def test_frames_kept_are_sure_and_match_a_neighbour():
    frames = [
        _frame(0, [A, B]),
        _frame(1, [A, B]),                      # like frame 0: kept, and so is frame 0
        _frame(2, [A, B], scores=[0.9, 0.5]),   # a doubtful cell
        _frame(3, [A, B, C]),                   # a cell appears: like neither neighbour
        _frame(4, [A, B], inferred=[False, True]),  # a cell carried over by the decoder
        _frame(5, [A, B]),                      # sure, and like frame 4: kept
        _frame(6, [A, ((40, 52), 2)]),          # cell 2 jumped 12 px: IoU with frame 5's below 0.7
        _frame(7, [], state="no_cells"),
    ]
    assert trusted_frames(frames) == [0, 1, 5]
    frames[6] = _frame(6, [A, B])
    assert trusted_frames(frames) == [0, 1, 5, 6]
    frames[5] = _frame(5, [A, ((40, 40), 9)])   # the same cell on another track: not the same cells
    assert trusted_frames(frames) == [0, 1]


def test_adapt_refuses_what_it_cannot_use(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such image file"):
        next(adapt([tmp_path / "missing.tif"], out_dir=tmp_path / "out"))
    with pytest.raises(FinetuneError, match="rounds"):
        next(adapt([tmp_path / "missing.tif"], out_dir=tmp_path / "out", rounds=0))
    assert not (tmp_path / "out").exists()
