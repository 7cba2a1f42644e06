"""Cell Tracking Challenge export: exact track tables and label images, scored by py-ctcmetrics."""

import numpy as np
import pytest
import tifffile

from napari_amodal.data.ctc import ctc_labels, label_image, write_ctc
from napari_amodal.instances import FrameInstances


def frame(t, cells, shape=(20, 20), visible=False):
    """A frame of squares: cells = [(track_id, parent_id, y, x, side)]."""
    masks = np.zeros((len(cells), *shape), bool)
    for m, (_, _, y, x, s) in zip(masks, cells):
        m[y:y + s, x:x + s] = True
    kw = {"visible": masks.copy()} if visible else {}
    return FrameInstances.from_masks(masks, shape=shape, frame=t, file_name="e.tif",
                                     track_ids=[c[0] for c in cells], parent_ids=[c[1] for c in cells], **kw)


def lineage():
    """Track 1 divides into 2 and 3 after frame 1; 3 is missed in frame 3; an unknown cell in frame 2;
    frame 5 has no cell."""
    return [
        frame(0, [(1, -1, 2, 2, 8)]),
        frame(1, [(1, -1, 2, 2, 8)]),
        frame(2, [(2, 1, 2, 2, 4), (3, 1, 8, 8, 4), (-1, -1, 15, 15, 3)]),
        frame(3, [(2, 1, 2, 2, 4)]),
        frame(4, [(3, 1, 8, 8, 4), (2, 1, 2, 2, 4)]),
        frame(5, []),
    ]


def test_tracks_follow_divisions_and_split_at_gaps():
    labels, tracks = ctc_labels(lineage()[::-1])  # any order in, time order out
    assert [lab.tolist() for lab in labels] == [[1], [1], [2, 3, 4], [2], [5, 2], []]
    # mother 1 (frames 0-1), daughters 2 and 3 from frame 2, the unknown cell alone, 3 back after its gap as 5
    assert tracks == [(1, 0, 1, 0), (2, 2, 4, 1), (3, 2, 2, 1), (4, 2, 2, 0), (5, 4, 4, 3)]


def test_a_mother_still_present_is_no_parent():
    frames = [frame(0, [(1, -1, 0, 0, 5)]), frame(1, [(1, -1, 0, 0, 5), (2, 1, 10, 10, 5)])]
    assert ctc_labels(frames)[1] == [(1, 0, 1, 0), (2, 1, 1, 0)]


def test_label_image_puts_the_visible_or_smaller_cell_in_front():
    f = frame(0, [(1, -1, 0, 0, 10), (2, -1, 5, 5, 4)])  # the small square lies inside the large one
    img = label_image(f, np.array([7, 9]))
    assert img.dtype == np.uint16 and img[6, 6] == 9 and img[1, 1] == 7 and img[15, 15] == 0
    f.visible = f.masks.copy()
    f.visible[1, 5:7, 5:7] = False  # the small cell hidden there: the large one shows
    img = label_image(f, np.array([7, 9]))
    assert img[5, 5] == 7 and img[8, 8] == 9


def test_write_ctc_files_and_self_score(tmp_path):
    from ctc_metrics.scripts.evaluate import evaluate_sequence

    gt = lineage()
    write_ctc(gt, tmp_path / "01_GT", kind="gt")
    write_ctc(gt, tmp_path / "01_RES")
    names = sorted(p.name for p in (tmp_path / "01_RES").iterdir())
    assert names == [f"mask{t:03d}.tif" for t in range(6)] + ["res_track.txt"]
    assert not tifffile.imread(tmp_path / "01_RES" / "mask005.tif").any()  # a frame without cells
    assert (tmp_path / "01_RES" / "res_track.txt").read_text().splitlines()[1] == "2 2 4 1"
    img = tifffile.imread(tmp_path / "01_GT" / "TRA" / "man_track004.tif")
    assert img.dtype == np.uint16 and set(np.unique(img)) == {0, 2, 5}
    scores = evaluate_sequence(str(tmp_path / "01_RES"), str(tmp_path / "01_GT"), metrics=["TRA", "DET"])
    assert scores["TRA"] == pytest.approx(1.0) and scores["DET"] == pytest.approx(1.0)
    # a result that misses the division scores lower
    wrong = [frame(t, [(1, -1, 2, 2, 8 if t < 2 else 4)]) for t in range(6)]
    write_ctc(wrong, tmp_path / "01_RES")
    assert len(list((tmp_path / "01_RES").glob("mask*.tif"))) == 6
    assert evaluate_sequence(str(tmp_path / "01_RES"), str(tmp_path / "01_GT"), metrics=["TRA"])["TRA"] < 0.9
    # a cell wholly hidden in one frame: left out there, its track split around the gap
    hidden = lineage()
    hidden[3] = frame(3, [(2, 1, 2, 2, 4), (3, 1, 3, 3, 2)], visible=True)
    hidden[3].visible[1] = False
    write_ctc(hidden, tmp_path / "h")
    assert (tmp_path / "h" / "res_track.txt").read_text().splitlines()[4] == "5 4 4 3"


def test_write_ctc_failure_leaves_the_earlier_folder(tmp_path, monkeypatch):
    write_ctc(lineage(), tmp_path / "01_RES")
    before = {p.name: p.read_bytes() for p in (tmp_path / "01_RES").iterdir()}

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full)
    with pytest.raises(OSError):
        write_ctc(lineage()[:2], tmp_path / "01_RES")
    assert {p.name: p.read_bytes() for p in (tmp_path / "01_RES").iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_RES"]  # no temporary folder left
    with pytest.raises(ValueError, match="twice"):
        write_ctc([lineage()[0], lineage()[0]], tmp_path / "x")


def test_cli_export_writes_one_folder_per_time_lapse(tmp_path, capsys):
    from napari_amodal.cli import main
    from napari_amodal.data.coco import write_coco

    other = [frame(t, [(1, -1, 0, 0, 5)]) for t in range(2)]
    for f in other:
        f.file_name = "f.tif"
    write_coco(tmp_path / "pred.json", lineage() + other, [{"id": 1, "name": "cell"}])
    assert main(["-q", "export", str(tmp_path / "pred.json"), "--out", str(tmp_path / "ctc")]) == 0
    assert sorted(p.name for p in (tmp_path / "ctc").iterdir()) == ["e_RES", "f_RES"]
    assert (tmp_path / "ctc" / "e_RES" / "res_track.txt").read_text().splitlines()[0] == "1 0 1 0"
    assert (tmp_path / "ctc" / "f_RES" / "res_track.txt").read_text() == "1 0 1 0\n"
    assert main(["-q", "export", str(tmp_path / "pred.json"), "--out", str(tmp_path / "ctc"), "--kind", "gt"]) == 0
    assert (tmp_path / "ctc" / "e_GT" / "TRA" / "man_track.txt").exists()
    write_coco(tmp_path / "again.json", lineage(), [{"id": 1, "name": "cell"}])  # e.tif once more
    assert main(["-q", "export", str(tmp_path / "pred.json"), str(tmp_path / "again.json"),
                 "--out", str(tmp_path / "two")]) == 2
    assert "same folder" in capsys.readouterr().err and not (tmp_path / "two").exists()
    assert main(["-q", "export", str(tmp_path / "missing.json"), "--out", str(tmp_path / "ctc")]) == 2
    assert "missing.json" in capsys.readouterr().err


def test_a_failed_swap_puts_the_earlier_export_back(tmp_path, monkeypatch):
    import os
    from pathlib import Path

    write_ctc(lineage(), tmp_path / "01_RES")
    before = (tmp_path / "01_RES" / "res_track.txt").read_text()
    assert (tmp_path / "01_RES").stat().st_mode & 0o777 == 0o777 & ~_umask_now()
    rename = Path.rename

    def failing(self, target):
        if Path(target).name == "01_RES" and ".tmp" in self.name:
            raise OSError(28, "No space left on device")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError):
        write_ctc(lineage()[:2], tmp_path / "01_RES")
    assert (tmp_path / "01_RES" / "res_track.txt").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["01_RES"]
    assert os.path.isdir(tmp_path / "01_RES")


def _umask_now():
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
