"""Temporal decoding on exact hand-made lineages: counts, carried cells, spurious ones, divisions."""

import numpy as np
import pytest

from napari_amodal.instances import FrameInstances
from napari_amodal.temporal import CountModel, TemporalDecoder, count_costs, decode_counts, decode_time_lapse
from napari_amodal.track import Tracker


def disk(cy, cx, r, shape=(64, 64)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def lineage(n_frames=12, division=6, missed=3, spurious=8):
    """Two cells; the second divides at ``division`` into two daughters inside it; the
    detector misses the first cell at ``missed`` and invents a small cell at ``spurious``."""
    frames = []
    for t in range(n_frames):
        cells = [disk(18, 18, 9)]
        cells += [disk(42, 42, 9)] if t < division else [disk(38, 38, 5), disk(46, 46, 5)]
        scores = [0.95] * len(cells)
        if t == missed:
            cells, scores = cells[1:], scores[1:]
        if t == spurious:
            cells, scores = cells + [disk(8, 56, 4)], scores + [0.8]
        frames.append(FrameInstances.from_masks(np.stack(cells), scores=scores, frame=t, file_name="a.tif",
                                                meta={"state": "cells"}))
    return frames


def test_count_costs_prefer_the_count_of_confident_detections():
    c = count_costs(np.array([0.99, 0.98, 0.1]))
    assert int(np.argmin(c)) == 2 and c.min() == 0
    assert c[5] > c[3] > c[2]  # counting cells nothing saw costs more and more
    assert int(np.argmin(count_costs(np.array([])))) == 0


def test_viterbi_ignores_a_one_frame_excursion_but_follows_a_lasting_change():
    model = CountModel()
    costs = np.stack([count_costs(np.array(s), model) for s in
                      [[0.9, 0.9]] * 4 + [[0.9]] + [[0.9, 0.9]] * 2 + [[0.9, 0.9, 0.9]] * 5])
    assert decode_counts(costs, model).tolist() == [2] * 7 + [3] * 5
    # start fixes the count before the first frame: a count may not fall without its cost
    assert decode_counts(costs[:3], model, start=2).tolist() == [2, 2, 2]


def test_missed_cell_is_carried_and_spurious_cell_dropped_with_exact_tracks():
    out = list(decode_time_lapse(lineage(), tracker=Tracker()))
    assert [len(f) for f in out] == [2] * 6 + [3] * 6
    assert [int(f.inferred.sum()) for f in out] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    carried = out[3].masks[out[3].inferred][0]
    assert np.array_equal(carried, disk(18, 18, 9))
    # the carried cell keeps its track: track 1 from the first frame to the last
    assert all(1 in f.track_ids.tolist() for f in out)
    # the division: track 2 ends at frame 5; two daughters start at frame 6 with parent 2
    assert all(f.track_ids.tolist() == [1, 2] or sorted(f.track_ids.tolist()) == [1, 2] for f in out[:6])
    daughters = {int(t): int(p) for f in out[6:] for t, p in zip(f.track_ids, f.parent_ids) if t != 1}
    assert sorted(daughters) == [3, 4] and set(daughters.values()) == {2}
    assert not any(np.array_equal(m, disk(8, 56, 4)) for f in out for m in f.masks)


def test_frame_by_frame_tracking_breaks_where_decoding_holds():
    """The comparison the decoder exists for: without it, the missed frame splits track 1."""
    tracker = Tracker()
    plain = [tracker.update(f) for f in lineage()]
    assert len({int(t) for f in plain for t in f.track_ids}) > 4  # extra tracks: re-born cell, spurious one


def test_streaming_decoder_holds_only_lag_frames():
    decoder = TemporalDecoder(lag=3)
    frames = lineage()
    emitted = [len(decoder.push(f)) for f in frames]
    assert emitted == [0, 0, 0] + [1] * 9
    assert len(decoder.window) == 3 and len(decoder.flush()) == 3 and not decoder.window


def test_blank_frames_keep_no_cells_and_break_nothing():
    frames = lineage(spurious=-1, missed=-1)
    frames[4] = FrameInstances.empty((64, 64), frame=4, file_name="a.tif", meta={"state": "blank"})
    out = list(decode_time_lapse(frames))
    assert len(out[4]) == 0 and out[4].meta["state"] == "blank"
    assert [len(f) for f in out[:4] + out[5:]] == [2] * 5 + [3] * 6


def test_empty_dish_stays_empty():
    frames = [FrameInstances.from_masks(disk(30, 30, 3)[None], scores=[0.4] if t == 5 else [0.05], frame=t,
                                        meta={"state": "cells"}) for t in range(10)]
    out = list(decode_time_lapse(frames))
    assert all(len(f) == 0 and f.meta["state"] == "no_cells" for f in out)


def test_lag_must_be_positive():
    with pytest.raises(ValueError, match="lag"):
        TemporalDecoder(lag=0)
