import numpy as np

from napari_amodal.data.sample import EMBRYO_GT, sample_path
from napari_amodal.data.coco import read_coco
from napari_amodal.instances import FrameInstances
from napari_amodal.track import link_laptrack, link_tracks


def _relabelled(gt):
    fresh = [FrameInstances.from_masks(f.masks, shape=f.shape, frame=f.frame) for f in gt]
    link_tracks(fresh)
    return fresh


def test_tracks_follow_cells_and_the_first_cleavages_on_the_sample():
    gt = sorted(read_coco(sample_path(EMBRYO_GT)), key=lambda f: f.frame)
    fresh = _relabelled(gt)
    # 2 -> 3 -> 4 cells (frames 0..13): every track and both divisions as in the ground truth
    relabel = {}
    for g, f in zip(gt[:14], fresh[:14]):
        for true_id, new_id in zip(g.track_ids, f.track_ids):
            assert relabel.setdefault(int(true_id), int(new_id)) == int(new_id)
        for true_parent, new_parent in zip(g.parent_ids, f.parent_ids):
            assert new_parent == (relabel[int(true_parent)] if true_parent >= 0 else -1)
    assert len(set(relabel.values())) == len(relabel) == 6
    # a cell never carries two ids within a frame, and colours (ids) persist between frames
    for f in fresh:
        assert len(set(f.track_ids.tolist())) == len(f)
    assert set(fresh[-1].track_ids) == set(fresh[-2].track_ids)


def test_laptrack_linker_follows_the_sample_lineage_and_closes_gaps():
    gt = sorted(read_coco(sample_path(EMBRYO_GT)), key=lambda f: f.frame)[:14]
    fresh = [FrameInstances.from_masks(f.masks, shape=f.shape, frame=f.frame) for f in gt]
    link_laptrack(fresh)
    relabel = {}
    for g, f in zip(gt, fresh):
        for true_id, new_id in zip(g.track_ids, f.track_ids):
            assert relabel.setdefault(int(true_id), int(new_id)) == int(new_id)
        for true_parent, new_parent in zip(g.parent_ids, f.parent_ids):
            assert new_parent == (relabel[int(true_parent)] if true_parent >= 0 else -1)
    assert len(set(relabel.values())) == len(relabel) == 6
    # a cell missed in one frame keeps its track across the gap (the Tracker starts a new one)
    gap = [FrameInstances.from_masks(f.masks, shape=f.shape, frame=f.frame) for f in gt[:4]]
    gap[2] = gap[2].select(np.arange(len(gap[2])) != 0)
    link_laptrack(gap)
    assert gap[3].track_ids[0] == gap[1].track_ids[0] and len(set(gap[3].track_ids.tolist())) == len(gap[3])
    # frames in any order give the same lineage; a cell with an empty mask is left unlinked
    shuffled = [FrameInstances.from_masks(f.masks, shape=f.shape, frame=f.frame) for f in gt][::-1]
    shuffled[0].masks[0] = False
    link_laptrack(shuffled)
    by_frame = {f.frame: f for f in shuffled}
    assert by_frame[13].track_ids[0] == -1
    for g in gt[:13]:
        assert by_frame[g.frame].track_ids.tolist() == [relabel[int(t)] for t in g.track_ids]


def test_division_of_a_lone_cell():
    shape = (40, 60)
    mother = np.zeros((1, *shape), bool)
    mother[0, 10:30, 10:50] = True
    daughters = np.zeros((2, *shape), bool)
    daughters[0, 10:30, 10:29] = True
    daughters[1, 10:30, 31:50] = True
    frames = [FrameInstances.from_masks(mother, frame=0), FrameInstances.from_masks(daughters, frame=1)]
    link_tracks(frames)
    m = frames[0].track_ids[0]
    assert set(frames[1].parent_ids.tolist()) == {m} and m not in frames[1].track_ids


def test_gap_starts_new_tracks():
    m = np.zeros((1, 20, 20), bool)
    m[0, 5:10, 5:10] = True
    a = FrameInstances.from_masks(m, frame=0)
    b = FrameInstances.from_masks(m, frame=2)
    link_tracks([a, b])
    assert a.track_ids[0] != b.track_ids[0]


def test_a_continued_tracker_keeps_the_ids_of_the_frame_before():
    from napari_amodal.instances import FrameInstances
    from napari_amodal.track import Tracker

    m = np.zeros((2, 40, 40), bool)
    m[0, 5:15, 5:15] = m[1, 20:35, 20:35] = True
    before = FrameInstances.from_masks(m, track_ids=[41, 7], parent_ids=[-1, 3], frame=4)
    nxt = FrameInstances.from_masks(np.concatenate([m[::-1], np.zeros((1, 40, 40), bool) | _square(0, 30, 8)]), frame=5)
    out = Tracker().continue_from(before, next_id=50).update(nxt)
    assert out.track_ids.tolist() == [7, 41, 50] and out.parent_ids.tolist() == [3, -1, -1]


def _square(y, x, s):
    q = np.zeros((1, 40, 40), bool)
    q[0, y : y + s, x : x + s] = True
    return q
