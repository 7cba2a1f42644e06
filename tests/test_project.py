"""Annotation projects without Qt: signature, save/load, autosave path, review, attention."""

import json
import os

import numpy as np
import pytest
from helpers import disk_mask

from napari_amodal.data.coco import read_amodal
from napari_amodal.instances import FrameInstances
from napari_amodal.project import (
    AnnotationProject,
    ProjectError,
    SignatureMismatchError,
    attention_reasons,
    autosave_path,
    cell_table,
    export_reviewed,
    image_signature,
    load_project,
    newest_version,
    next_attention_frame,
    reviewed_frames,
    save_project,
)

SHAPE = (40, 50)


def _stack(seed=0):
    return (np.random.default_rng(seed).random((4, *SHAPE)) * 255).astype(np.uint8)


def _frames():
    a = disk_mask(SHAPE, (20, 20), 8)
    b = disk_mask(SHAPE, (20, 30), 8)
    return [
        FrameInstances.from_masks(np.stack([a, b]), scores=[0.9, 0.3], track_ids=[1, 2], frame=0),
        FrameInstances.from_masks(np.stack([a, b]), scores=[0.9, 0.8], track_ids=[1, 2], frame=1),
        FrameInstances.from_masks(a[None], scores=[0.9], track_ids=[1], frame=3),
    ]


@pytest.fixture
def project():
    sig = image_signature(_stack(), path="/data/embryo.tif")
    return AnnotationProject.from_frames(sig, _frames(), n_frames=4, reviewed={1})


def test_signature_is_stable_and_tells_images_apart():
    s = image_signature(_stack(), path="/x/a.tif")
    assert s["name"] == "a.tif" and s["shape"] == [4, *SHAPE] and s["dtype"] == "uint8"
    assert image_signature(_stack(), path="/elsewhere/a.tif")["hash"] == s["hash"]
    assert image_signature(_stack(1))["hash"] != s["hash"]


def test_from_frames_fills_missing_frames_and_names_them(project):
    assert project.n_frames == 4
    assert [f.frame for f in project.frames] == [0, 1, 2, 3]
    assert len(project.frames[2]) == 0
    assert {f.file_name for f in project.frames} == {"embryo.tif"}


def test_save_load_round_trip(project, tmp_path):
    path = save_project(tmp_path / "p.json", project)
    back = load_project(path, signature=image_signature(_stack(), path="/moved/embryo.tif"))
    assert back.reviewed == {1} and back.n_frames == 4
    for a, b in zip(project.frames, back.frames):
        assert np.array_equal(a.masks, b.masks)
        assert np.allclose(a.scores, b.scores)
        assert list(a.track_ids) == list(b.track_ids)
    # a project file is also a plain COCO-amodal file
    frames, _ = read_amodal(path)
    assert len(frames) == 4


def test_project_for_another_image_is_refused(project, tmp_path):
    path = save_project(tmp_path / "p.json", project)
    with pytest.raises(SignatureMismatchError, match="another image"):
        load_project(path, signature=image_signature(_stack(seed=5)))
    with pytest.raises(SignatureMismatchError, match="shape"):
        load_project(path, signature=image_signature(np.zeros((2, *SHAPE), np.uint8)))


def test_not_a_project(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(ProjectError, match="not a napari-amodal project"):
        load_project(bad)
    bad.write_text("{broken")
    with pytest.raises(ProjectError, match="not a valid"):
        load_project(bad)


def test_failed_write_keeps_previous_file(project, tmp_path, monkeypatch):
    path = save_project(tmp_path / "p.json", project)
    before = path.read_text()
    project.reviewed.add(3)

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_project(path, project)
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["p.json"]  # no temp file left


def test_autosave_path_and_newest_version(project, tmp_path):
    path = save_project(tmp_path / "p.json", project)
    auto = autosave_path(path)
    assert auto.name == "p.autosave.json"
    assert newest_version(path) == path
    save_project(auto, project)
    os.utime(auto, (os.path.getmtime(path) + 5,) * 2)
    assert newest_version(path) == auto


def test_reviewed_frames_and_export(project, tmp_path):
    project.reviewed = {3, 1}
    frames = reviewed_frames(project)
    assert [f.frame for f in frames] == [1, 3]
    assert all(f.file_name == "embryo.tif" for f in frames)
    out = export_reviewed(project, tmp_path / "train.json")
    d = json.loads(out.read_text())
    assert [(i["file_name"], i["frame"]) for i in d["images"]] == [("embryo.tif", 1), ("embryo.tif", 3)]
    assert all("score" not in a for a in d["annotations"])
    project.reviewed = set()
    with pytest.raises(ProjectError, match="no frame"):
        export_reviewed(project, tmp_path / "none.json")


def test_attention_order(project):
    cells = cell_table(project.frames)
    reasons = attention_reasons(cells, 4, reviewed={1}, score_threshold=0.5)
    assert 1 not in reasons
    assert reasons[0] == ["low score", "not reviewed"]
    assert reasons[2] == ["cell count changed", "not reviewed"]  # 2 cells -> 0
    assert reasons[3] == ["cell count changed", "not reviewed"]  # 0 -> 1
    assert next_attention_frame(reasons, 0, 4) == 2
    assert next_attention_frame(reasons, 3, 4) == 0
    # only "not reviewed" left: the next unreviewed frame
    reasons = attention_reasons(cells, 4, reviewed={0, 1, 2, 3})
    assert next_attention_frame(reasons, 1, 4) is None
    reasons = attention_reasons([], 3, reviewed={0})
    assert next_attention_frame(reasons, 0, 3) == 1
