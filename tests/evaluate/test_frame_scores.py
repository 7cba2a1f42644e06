"""Per-frame figures on hand-made frames whose answers are known exactly."""

import math

import numpy as np
from helpers import disk_mask

from napari_amodal.evaluate.frame_scores import frame_scores, solidity
from napari_amodal.instances import FrameInstances

SHAPE = (80, 100)


def frame(masks, t, scores=None):
    masks = np.array(masks, bool).reshape(-1, *SHAPE)
    return FrameInstances.from_masks(masks, shape=SHAPE, scores=scores, file_name="e.tif", frame=t)


def test_solidity_of_known_shapes():
    assert solidity(disk_mask(SHAPE, (40, 50), 20)) > 0.97
    ell = np.zeros(SHAPE, bool)
    ell[10:70, 10:30] = True
    ell[10:30, 10:90] = True  # an L: half its hull is empty
    assert abs(solidity(ell) - (60 * 20 + 20 * 60) / (60 * 20 + 20 * 60 + 0.5 * 40 * 60)) < 0.03
    assert math.isnan(solidity(np.zeros(SHAPE, bool)))


def test_counts_empty_one_cell_and_false_positives():
    a, b = disk_mask(SHAPE, (30, 30), 12), disk_mask(SHAPE, (40, 70), 12)
    far = disk_mask(SHAPE, (70, 10), 6)
    ell = np.zeros(SHAPE, bool)
    ell[5:45, 5:15] = True
    ell[5:15, 5:45] = True
    gts = [frame([a], 0), frame([a, b], 1), frame([], 2), frame([], 3)]
    preds = [
        frame([a, far], 0, scores=[0.9, 0.3]),  # the far one is below the threshold: one cell, right
        frame([a, b, far], 1, scores=[0.9, 0.8, 0.7]),  # one false positive, count off by one
        frame([], 2),  # empty and empty
        frame([ell], 3, scores=[0.6]),  # an invented cell with an L shape
    ]
    r = frame_scores(gts, preds, score_threshold=0.5)
    assert r["frames"] == 4
    assert r["count_exact"] == 0.5 and r["count_within_1"] == 1.0
    assert r["one_cell_frames"] == 1 and r["one_cell_exact"] == 1.0
    assert r["empty_frames"] == 2 and r["empty_none"] == 0.5
    assert r["kept_cells"] == 5 and r["false_positive_share"] == 2 / 5
    assert r["low_solidity_share"] == 1 / 5


def test_a_missing_prediction_counts_as_no_cells():
    a = disk_mask(SHAPE, (30, 30), 12)
    r = frame_scores([frame([a], 0), frame([], 1)], [])
    assert r["count_exact"] == 0.5 and r["empty_none"] == 1.0 and math.isnan(r["false_positive_share"])
