"""Exact AP values for perturbations whose effect on COCO AP is known analytically."""

import json
import math

import numpy as np
import pytest

from napari_amodal.cli import main
from napari_amodal.data.coco import write_coco
from napari_amodal.evaluate import evaluate_frames
from napari_amodal.instances import FrameInstances, occlusion_from_masks

SHAPE = (120, 160)


def squares(corners, side=20, shift=0):
    masks = np.zeros((len(corners), *SHAPE), bool)
    for i, (y, x) in enumerate(corners):
        masks[i, y : y + side, x + shift : x + shift + side] = True
    return masks


def gt_frames(n_frames=4):
    corners = [(5, 5), (5, 40), (5, 75), (40, 5), (40, 40), (40, 75)]
    return [FrameInstances.from_masks(squares(corners), file_name="s.tif", frame=t) for t in range(n_frames)]


def test_ground_truth_against_itself_is_perfect():
    gt = gt_frames()
    r = evaluate_frames(gt, gt)
    assert r["AP"] == pytest.approx(1.0) and r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(1.0)
    assert r["n_gt"] == r["n_pred"] == 24


def test_half_the_cells_missing_gives_51_of_101():
    gt = gt_frames()
    pred = [f.select(np.arange(len(f)) % 2 == 0) for f in gt]
    # precision 1 up to recall 0.5, nothing after: 51 of COCO's 101 recall points
    assert evaluate_frames(gt, pred)["AP"] == pytest.approx(51 / 101)


def test_higher_scored_false_positives_halve_ap():
    gt = gt_frames()
    pred = []
    for f in gt:
        fp = squares([(80, 120)] * 1 + [(80, 10), (80, 40), (80, 70), (95, 100), (95, 130)], side=12)
        masks = np.concatenate([f.masks, fp])
        scores = [0.5] * len(f) + [0.9] * len(fp)
        pred.append(FrameInstances.from_masks(masks, scores=scores, file_name=f.file_name, frame=f.frame))
    # every false positive ranks above every true one: precision envelope 0.5 everywhere
    assert evaluate_frames(gt, pred)["AP"] == pytest.approx(0.5, abs=1e-6)


def test_shifted_masks_lose_the_strict_thresholds():
    gt = gt_frames()
    corners = [(5, 5), (5, 40), (5, 75), (40, 5), (40, 40), (40, 75)]
    pred = [FrameInstances.from_masks(squares(corners, shift=2), file_name="s.tif", frame=f.frame) for f in gt]
    # IoU = 18/22 = 0.818: true positive at thresholds 0.50..0.80 (7 of 10)
    r = evaluate_frames(gt, pred)
    assert r["AP"] == pytest.approx(0.7)
    assert r["AP50"] == pytest.approx(1.0) and r["AP75"] == pytest.approx(1.0)


def test_frames_are_matched_by_file_and_frame_not_order():
    gt = gt_frames()
    pred = list(reversed(gt))
    assert evaluate_frames(gt, pred)["AP"] == pytest.approx(1.0)
    wrong = [FrameInstances.from_masks(f.masks, file_name="other.tif", frame=f.frame) for f in gt]
    r = evaluate_frames(gt, wrong)
    assert r["AP"] == 0.0 and r["n_unmatched_pred_images"] == 4


def test_occlusion_iou():
    shape = (50, 50)
    masks = np.zeros((2, *shape), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 20:40, 20:40] = True
    gt = [FrameInstances.from_masks(masks, file_name="o.tif")]
    exact = FrameInstances.from_masks(masks, file_name="o.tif", occlusion=occlusion_from_masks(masks).astype(np.float32))
    assert evaluate_frames(gt, [exact])["occlusion_iou"] == pytest.approx(1.0)
    half = np.zeros(shape, np.float32)
    half[20:30, 20:25] = 0.9  # half of the 10x10 overlap
    r = evaluate_frames(gt, [FrameInstances.from_masks(masks, file_name="o.tif", occlusion=half)])
    assert r["occlusion_iou"] == pytest.approx(0.5)
    assert math.isnan(evaluate_frames(gt, gt)["occlusion_iou"])  # gt frames carry no predicted map


def test_cli_evaluate_json(tmp_path, capsys):
    gt = gt_frames(2)
    pred = [f.select(np.arange(len(f)) % 2 == 0) for f in gt]
    for f in pred:
        f.scores[:] = 0.8
    write_coco(tmp_path / "gt.json", gt, [{"id": 1, "name": "blastomere"}])
    write_coco(tmp_path / "pred.json", pred, [{"id": 1, "name": "blastomere"}])
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["AP"] == pytest.approx(51 / 101) and out["occlusion_iou"] is None
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "pred.json")]) == 0
    assert "AP50" in capsys.readouterr().out


def test_cli_evaluate_reads_occlusion_file(tmp_path, capsys):
    import tifffile

    masks = np.zeros((2, 50, 50), bool)
    masks[0, 10:30, 10:30] = True
    masks[1, 20:40, 20:40] = True
    gt = [FrameInstances.from_masks(masks, file_name="o.tif")]
    pred = [FrameInstances.from_masks(masks, file_name="o.tif", scores=[0.9, 0.9])]
    occ = (occlusion_from_masks(masks) * 255).astype(np.uint8)[None]
    tifffile.imwrite(tmp_path / "o_occlusion.tif", occ)
    write_coco(tmp_path / "gt.json", gt, [{"id": 1, "name": "c"}])
    write_coco(tmp_path / "pred.json", pred, [{"id": 1, "name": "c"}], images_extra={("o.tif", 0): {"occlusion_file": "o_occlusion.tif"}})
    assert main(["evaluate", str(tmp_path / "gt.json"), str(tmp_path / "pred.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["occlusion_iou"] == pytest.approx(1.0)


def test_cli_bad_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{}")
    assert main(["evaluate", str(tmp_path / "bad.json"), str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert "bad.json" in err and "images" in err


def test_evaluate_streams_frame_by_frame(tmp_path):
    """A file decoded all at once would hold 200 x 8 dense 256 x 256 masks (105 MB);
    evaluate reads lazy records and keeps one frame's masks (+ RLE) at a time."""
    import tracemalloc

    from napari_amodal.data.coco import read_amodal

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:256, :256]

    def frames():
        for t in range(200):
            c = rng.uniform(50, 200, (8, 2))
            masks = (yy[None] - c[:, :1, None]) ** 2 + (xx[None] - c[:, 1:, None]) ** 2 <= 30**2
            yield FrameInstances.from_masks(masks, scores=rng.uniform(0.5, 1, 8), file_name="s.tif", frame=t)

    write_coco(tmp_path / "p.json", frames(), [{"id": 1, "name": "cell"}], predictions=True)
    gt, cats = read_amodal(tmp_path / "p.json", lazy=True)
    pred, _ = read_amodal(tmp_path / "p.json", lazy=True)
    tracemalloc.start()
    report = evaluate_frames(gt, pred, cats)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert report["AP"] == pytest.approx(1.0) and report["n_gt"] == 1600
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB: frames were held at once"
