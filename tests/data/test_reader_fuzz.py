"""Fuzzing the readers: any file either reads or fails with one clear error
(AmodalFormatError / ValueError naming the file), never another exception."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_amodal.data.coco import AmodalFormatError, read_amodal
from napari_amodal.io_images import read_stack

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=5))
values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                      max_leaves=12)
image = st.fixed_dictionaries({"id": values, "file_name": values, "height": values, "width": values},
                              optional={"frame": values})
rle = st.fixed_dictionaries({"size": st.lists(st.integers(-2, 40), max_size=3), "counts": values | st.text(max_size=8)})
segm = st.one_of(values, rle, st.lists(st.lists(st.floats(-5, 50), max_size=8), max_size=2))
coco_ann = st.fixed_dictionaries({"image_id": values, "category_id": values, "segmentation": segm},
                                 optional={"score": values, "track_id": values, "visible_segmentation": segm})
kins_ann = st.fixed_dictionaries({"image_id": values, "category_id": values, "a_segm": segm},
                                 optional={"i_segm": segm})
cocoa_ann = st.fixed_dictionaries({"image_id": values, "regions": st.lists(
    st.fixed_dictionaries({"segmentation": segm}, optional={"visible_mask": segm}), max_size=2) | values})
documents = st.one_of(
    values,
    st.fixed_dictionaries({"images": st.lists(image, max_size=3) | values,
                           "annotations": st.lists(st.one_of(coco_ann, kins_ann, cocoa_ann), max_size=3) | values},
                          optional={"categories": values}),
)
fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(doc=documents)
def test_annotation_readers_fail_cleanly(tmp_path, doc):
    path = tmp_path / "a.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    for fmt in (None, "coco-amodal", "kins", "cocoa"):
        try:
            frames, _ = read_amodal(path, format=fmt)
        except (AmodalFormatError, ValueError) as e:
            assert "a.json" in str(e) or "format" in str(e)
            continue
        for f in frames:
            assert f.masks.dtype == bool and f.masks.shape[1:] == f.shape


def test_duplicate_image_ids_are_refused(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.tif", "frame": 0, "height": 8, "width": 8},
                      {"id": 1, "file_name": "a.tif", "frame": 1, "height": 8, "width": 8}],
           "annotations": [], "categories": []}
    (tmp_path / "d.json").write_text(json.dumps(doc))
    with pytest.raises(AmodalFormatError, match="duplicate image id 1"):
        read_amodal(tmp_path / "d.json")


def test_huge_sizes_are_refused_before_any_allocation(tmp_path):
    doc = {"images": [{"id": 1, "file_name": "a.tif", "height": 10**9, "width": 10**9}],
           "annotations": [{"image_id": 1, "category_id": 1, "segmentation": []}], "categories": []}
    (tmp_path / "h.json").write_text(json.dumps(doc))
    with pytest.raises(AmodalFormatError, match="larger than any image"):
        read_amodal(tmp_path / "h.json")


@fuzz
@given(data=st.binary(min_size=0, max_size=600), cut=st.integers(0, 2000))
def test_image_reader_fails_cleanly_on_damaged_files(tmp_path, data, cut):
    import tifffile

    good = tmp_path / "good.tif"
    if not good.exists():
        tifffile.imwrite(good, (np.arange(3 * 32 * 32) % 251).astype(np.uint8).reshape(3, 32, 32),
                         compression="zlib", metadata={"axes": "TYX"})
    raw = good.read_bytes()
    path = tmp_path / "x.tif"
    path.write_bytes(raw[: cut % len(raw)] + data)  # truncated, then junk
    try:
        stack, axes = read_stack(path)
    except ValueError as e:
        assert "x.tif" in str(e)
    else:
        assert len(axes) == stack.ndim


project_meta = st.fixed_dictionaries(
    {"format": st.just("napari-amodal-project") | values},
    optional={"version": values, "image": values | st.fixed_dictionaries({"shape": values}), "n_frames": values,
              "reviewed": values | st.lists(st.integers(-3, 30), max_size=4)})


@fuzz
@given(doc=documents, meta=project_meta)
def test_project_loader_fails_cleanly(tmp_path, doc, meta):
    from napari_amodal.project import PROJECT_KEY, ProjectError, load_project

    doc = dict(doc) if isinstance(doc, dict) else {"images": [], "annotations": []}
    doc[PROJECT_KEY] = meta
    path = tmp_path / "p.project.json"
    path.write_text(json.dumps(doc, allow_nan=True))
    try:
        proj = load_project(path)
    except (ProjectError, AmodalFormatError, ValueError) as e:
        assert "p.project.json" in str(e)
    else:
        assert all(0 <= t < max(proj.n_frames, 1) for t in proj.reviewed)
