import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from napari_amodal.data.coco import AmodalFormatError, read_amodal, read_coco, write_coco
from napari_amodal.instances import FrameInstances, mask_iou
from test_instances import SHAPE, overlapping_masks

CATS = [{"id": 1, "name": "blastomere"}]


def test_round_trip_keeps_every_field(tmp_path, two_cells):
    two_cells.visible = two_cells.masks & ~np.roll(two_cells.masks, 1, axis=0)
    two_cells.parent_ids = np.array([-1, 1, -1])
    two_cells.inferred = np.array([False, True, False])
    other = FrameInstances.empty(two_cells.shape, file_name="a.tif", frame=4)
    path = tmp_path / "pred.json"
    write_coco(path, [two_cells, other], CATS)
    d = json.loads(path.read_text())
    assert [im["frame"] for im in d["images"]] == [3, 4]
    assert d["images"][0]["file_name"] == "a.tif"
    ann = d["annotations"][0]
    assert ann["iscrowd"] == 0 and "score" in ann and ann["track_id"] == 1
    assert ann["bbox"] == pytest.approx(
        [21.0, 31.0, 39.0, 39.0]
    )  # skimage disk of radius 20 at (50, 40): rows 31..69, cols 21..59
    frames, cats = read_amodal(path)
    assert cats == CATS
    back = frames[0]
    np.testing.assert_array_equal(back.masks, two_cells.masks)
    np.testing.assert_array_equal(back.visible, two_cells.visible)
    np.testing.assert_allclose(back.scores, two_cells.scores)
    np.testing.assert_array_equal(back.track_ids, two_cells.track_ids)
    np.testing.assert_array_equal(back.parent_ids, two_cells.parent_ids)
    np.testing.assert_array_equal(back.inferred, [False, True, False])
    assert ["inferred" in a for a in d["annotations"]] == [False, True, False]
    assert (back.file_name, back.frame) == ("a.tif", 3)
    assert len(frames[1]) == 0 and frames[1].shape == two_cells.shape


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(overlapping_masks())
def test_round_trip_random_masks(tmp_path, masks):
    f = FrameInstances.from_masks(masks, shape=SHAPE, file_name="s.tif")
    write_coco(tmp_path / "x.json", [f], CATS)
    back = read_coco(tmp_path / "x.json")[0]
    np.testing.assert_array_equal(back.masks, masks)


def test_ground_truth_has_no_score(tmp_path, two_cells):
    two_cells.scores[:] = 1.0
    write_coco(tmp_path / "gt.json", [two_cells], CATS)
    assert "score" not in json.loads((tmp_path / "gt.json").read_text())["annotations"][0]


def test_failed_write_leaves_previous_file(tmp_path, two_cells, monkeypatch):
    path = tmp_path / "ann.json"
    write_coco(path, [two_cells], CATS)
    before = path.read_bytes()
    import napari_amodal.data.coco as coco

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(coco.json, "dumps", lambda *a, **k: "x" * 10 + boom())
    with pytest.raises(RuntimeError):
        write_coco(path, [two_cells], CATS)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def _write(tmp_path, obj):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return p


@pytest.mark.parametrize(
    "obj, field",
    [
        ("{not json", "<json>"),
        ({"annotations": []}, "<root>.images"),
        ({"images": [{"id": 1, "file_name": "a", "width": 5}], "annotations": []}, "images[0].height"),
        ({"images": [{"id": 1, "file_name": "a", "height": 5, "width": 5}], "annotations": [{"image_id": 2, "segmentation": [], "category_id": 1}]}, "annotations[0].image_id"),
        ({"images": [{"id": 1, "file_name": "a", "height": 5, "width": 5}], "annotations": [{"image_id": 1, "category_id": 1}]}, "annotations[0].segmentation"),
        ({"images": [{"id": 1, "file_name": "a", "height": 5, "width": 5}], "annotations": [{"image_id": 1, "category_id": 1, "segmentation": {"size": [6, 6], "counts": "abc"}}]}, "annotations[0].segmentation"),
        ({"images": [{"id": 1, "file_name": "a", "height": 5, "width": 5}], "annotations": [{"image_id": 1, "category_id": "x", "segmentation": []}]}, "annotations[0].category_id"),
        ({"images": [{"id": 1, "file_name": "a", "height": 5, "width": 5}], "annotations": [{"image_id": 1, "category_id": 1, "segmentation": [], "inferred": "yes"}]}, "annotations[0].inferred"),
    ],
)
def test_bad_files_name_file_and_field(tmp_path, obj, field):
    p = _write(tmp_path, obj)
    with pytest.raises(AmodalFormatError) as e:
        read_coco(p)
    assert str(p) in str(e.value) and field in str(e.value)


def test_missing_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_coco(tmp_path / "nope.json")


def _square_poly(x0, y0, s):
    # COCO polygon, x/y pairs on pixel corners
    return [x0, y0, x0 + s, y0, x0 + s, y0 + s, x0, y0 + s]


def test_read_kins(tmp_path):
    d = {
        "images": [{"id": 7, "file_name": "k.png", "height": 40, "width": 50}],
        "annotations": [
            {"image_id": 7, "category_id": 2, "a_segm": [_square_poly(10, 10, 20)], "i_segm": [_square_poly(10, 10, 10)], "a_bbox": [10, 10, 20, 20]},
        ],
        "categories": [{"id": 2, "name": "car"}],
    }
    frames, cats = read_amodal(_write(tmp_path, d))
    f = frames[0]
    assert f.labels.tolist() == [2] and cats[0]["name"] == "car"
    assert f.areas[0] == 400 and f.visible[0].sum() == 100
    assert (f.visible[0] <= f.masks[0]).all()
    np.testing.assert_array_equal(f.boxes[0], [10, 10, 30, 30])


def test_read_cocoa(tmp_path):
    from pycocotools import mask as mu

    vis = np.zeros((40, 50), np.uint8, order="F")
    vis[10:20, 10:30] = 1
    rle = mu.encode(np.asfortranarray(vis))
    rle["counts"] = rle["counts"].decode()
    d = {
        "images": [{"id": 1, "file_name": "c.jpg", "height": 40, "width": 50}],
        "annotations": [
            {"image_id": 1, "regions": [
                {"segmentation": _square_poly(10, 10, 20), "visible_mask": rle},
                {"segmentation": _square_poly(25, 5, 10)},
            ]}
        ],
    }
    f = read_coco(_write(tmp_path, d))[0]
    assert len(f) == 2
    assert f.areas.tolist() == [400, 100]
    assert f.visible[0].sum() == 200
    assert mask_iou(f.masks[:1], f.masks[1:])[0, 0] > 0  # the two regions overlap


def test_written_files_are_readable_by_others(tmp_path, two_cells):
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_coco(tmp_path / "a.json", [two_cells], CATS)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
