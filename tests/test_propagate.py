import numpy as np
import pytest

from helpers import disk_mask
from napari_amodal.instances import FrameInstances, mask_iou
from napari_amodal.propagate import Edit, apply_offer, offer

SHAPE = (96, 128)
T = 10


def _a(t):  # a real cell moving right 2 px a frame
    return disk_mask(SHAPE, (40, 30 + 2 * t), 12)


def _c(t):  # another real cell moving down 1 px a frame
    return disk_mask(SHAPE, (30 + t, 90), 10)


def _images():
    rng = np.random.default_rng(0)
    images = rng.normal(100, 3, (T, *SHAPE))
    for t in range(T):
        images[t][_a(t)] += 80
        images[t][_c(t)] += 60
    return images.astype(np.float32)


def _frames(cells_per_frame):
    return [FrameInstances.from_masks(np.stack(m) if m else [], shape=SHAPE, track_ids=np.arange(1, len(m) + 1),
                                      frame=t) for t, m in enumerate(cells_per_frame)]


def _empty():
    return np.zeros((0, *SHAPE), bool)


def test_a_deleted_cell_is_deleted_while_the_model_keeps_it():
    spurious = disk_mask(SHAPE, (75, 60), 8)
    frames = _frames([[_a(t), _c(t)] + ([spurious] if t < 7 else []) for t in range(T)])
    edit = Edit(2, spurious[None], _empty())
    o = offer(frames, _images(), edit)
    assert o.frames == [3, 4, 5, 6]  # gone from frame 7 on: nothing left to delete
    fixed = apply_offer(frames, o)
    assert [len(f) for f in fixed] == [3, 3, 3, 2, 2, 2, 2, 2, 2, 2]
    for t in o.frames:
        assert np.array_equal(fixed[t].masks, frames[t].masks[:2]) and list(fixed[t].track_ids) == [1, 2]
    assert fixed[2] is frames[2] and fixed[8] is frames[8]  # frames outside the offer are untouched


def test_a_drawn_cell_follows_the_image_until_the_model_finds_it():
    # the model misses cell c in frames 0-5 and draws it right from frame 6 on
    frames = _frames([[_a(t)] + ([_c(t)] if t >= 6 else []) for t in range(T)])
    o = offer(frames, _images(), Edit(1, _empty(), _c(1)[None], (7,)))
    assert o.frames == [2, 3, 4, 5]  # from frame 6 on the edit changes nothing: not offered
    for t in range(2, 6):  # carried with the cell's motion in the image, exactly
        assert np.array_equal(o.masks[t][0], _c(t)) and list(o.ids[t]) == [7] and len(o.remove[t]) == 0
    far = offer(frames, _images(), Edit(1, _empty(), _c(1)[None], (7,)), max_frames=8)
    assert far.frames == [2, 3, 4, 5]
    fixed = apply_offer(frames, o)
    assert all(len(f) == 2 for f in fixed[2:])
    assert np.array_equal(fixed[4].masks[1], _c(4)) and fixed[4].track_ids[1] == 7


def test_a_redrawn_cell_replaces_the_models_outline_and_stops_at_a_division():
    def boxy(t):  # the model's rounded-square version of cell a
        m = np.zeros(SHAPE, bool)
        m[28:53, 18 + 2 * t:43 + 2 * t] = True
        return m

    halves = [disk_mask(SHAPE, (40, 30 + 2 * 7 - 6), 7), disk_mask(SHAPE, (40, 30 + 2 * 7 + 6), 7)]
    frames = _frames([[boxy(t), _c(t)] if t < 7 else [*halves, _c(t)] for t in range(T)])
    assert mask_iou(boxy(3)[None], _a(3)[None])[0, 0] < 0.9
    o = offer(frames, _images(), Edit(2, boxy(2)[None], _a(2)[None], (1,)))
    assert o.frames == [3, 4, 5, 6]  # frame 7: the cell the user drew now holds two of the model's
    fixed = apply_offer(frames, o)
    for t in o.frames:
        assert list(o.remove[t]) == [0]
        assert np.array_equal(fixed[t].masks[-1], _a(t)) and np.array_equal(fixed[t].masks[0], _c(t))


def test_offers_go_backwards_too_and_can_be_cut_short():
    spurious = disk_mask(SHAPE, (75, 60), 8)
    frames = _frames([[_a(t), spurious] for t in range(T)])
    o = offer(frames, _images(), Edit(5, spurious[None], _empty()), direction=-1)
    assert o.frames == [4, 3, 2, 1, 0]
    short = o.up_to(2)
    assert short.frames == [4, 3] and [len(f) for f in apply_offer(frames, short)] == [2, 2, 2, 1, 1, 2, 2, 2, 2, 2]
    assert len(offer(frames, _images(), Edit(5, spurious[None], _empty()), max_frames=3)) == 3


def test_edits_are_checked():
    with pytest.raises(ValueError, match="at least one"):
        Edit(0, _empty(), _empty())
    with pytest.raises(ValueError, match="ids"):
        Edit(0, _empty(), _a(0)[None])
    with pytest.raises(ValueError, match="direction"):
        offer(_frames([[_a(0)]]), _images(), Edit(0, _a(0)[None], _empty()), direction=2)


def test_a_drawn_cell_never_replaces_a_neighbour_the_user_left_alone():
    neighbour, missed = disk_mask(SHAPE, (48, 60), 14), disk_mask(SHAPE, (48, 66), 14)
    assert mask_iou(neighbour[None], missed[None])[0, 0] > 0.5  # overlapping amodal cells
    images = np.random.default_rng(1).normal(100, 3, (T, *SHAPE)).astype(np.float32)
    frames = _frames([[neighbour] for _ in range(T)])
    o = offer(frames, images, Edit(1, _empty(), missed[None], (9,)))
    assert o.frames == list(range(2, T))
    assert all(len(o.remove[t]) == 0 and np.array_equal(o.masks[t][0], missed) for t in o.frames)
    assert all(len(f) == 2 for f in apply_offer(frames, o)[2:])
