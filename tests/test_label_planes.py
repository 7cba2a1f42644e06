"""Overlapping cells on label planes: a plane per cell for the whole time-lapse, and back."""

import numpy as np
import pytest
import tifffile

from napari_amodal.instances import FrameInstances
from napari_amodal.label_planes import frame_from_planes, plane_of_cells, stack_planes, write_label_tiff


def _disc(cy, cx, r, shape=(40, 60)):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _frames():
    """Cells 1 and 2 overlap in frame 0; 2 and 3 in frame 2; 1 and 3 never meet."""
    f0 = FrameInstances.from_masks(np.array([_disc(20, 15, 8), _disc(20, 25, 8), _disc(20, 50, 6)]),
                                   track_ids=[1, 2, 3], scores=[0.9, 0.8, 0.7], frame=0)
    f2 = FrameInstances.from_masks(np.array([_disc(20, 8, 6), _disc(20, 35, 8), _disc(20, 45, 8)]),
                                   track_ids=[1, 2, 3], scores=[0.6, 0.5, 0.4], frame=2)
    return [f0, f2]


def test_cells_that_ever_overlap_get_different_planes_and_come_back_exactly():
    frames = _frames()
    planes = plane_of_cells(frames)
    assert planes[1] != planes[2] and planes[2] != planes[3] and planes[1] == planes[3]
    stack, _ = stack_planes(frames, n_frames=3)
    assert stack.shape == (2, 3, 40, 60) and stack.dtype == np.uint16
    assert not stack[:, 1].any()  # a frame without cells stays empty
    for f in frames:
        back = frame_from_planes(stack[:, f.frame], f.frame, like=f)
        assert list(back.track_ids) == [1, 2, 3]
        assert np.array_equal(back.masks, f.masks)  # the hidden parts too
        assert np.allclose(back.scores, f.scores)


def test_a_cell_painted_on_another_plane_is_still_one_cell_and_new_ids_are_new_cells():
    frames = _frames()
    stack, planes = stack_planes(frames, n_frames=3)
    t0 = stack[:, 0].copy()
    other = 1 - planes[1]
    t0[other][5:8, 10:20] = 1  # the user paints cell 1 further on the other plane
    t0[planes[1]][30:34, 40:44] = 9  # and draws a new cell 9
    t0[planes[3]][t0[planes[3]] == 3] = 0  # and erases cell 3
    back = frame_from_planes(t0, 0, like=frames[0])
    assert list(back.track_ids) == [1, 2, 9]
    assert back.masks[0][5:8, 10:20].all() and back.masks[0][frames[0].masks[0]].all()
    assert back.scores[2] == 1.0 and back.parent_ids[2] == -1  # drawn by hand


def test_the_label_tiff_is_an_imagej_hyperstack_written_atomically(tmp_path, monkeypatch):
    stack, _ = stack_planes(_frames(), n_frames=3)
    path = write_label_tiff(tmp_path / "labels.tif", stack)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TCYX"
        assert np.array_equal(tif.asarray(), stack.transpose(1, 0, 2, 3))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", fail)
    with pytest.raises(OSError):
        write_label_tiff(path, stack)
    assert path.read_bytes() == before
