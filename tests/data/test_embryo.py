"""Synthetic embryo time-lapses: determinism, physics of the ground truth, looks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_amodal.data.embryo import (
    EMBRYO_CATEGORIES,
    EmbryoStyle,
    render_sequence,
    write_embryo_dataset,
)
from napari_amodal.instances import occlusion_from_masks

SIZE = 256


@pytest.fixture(scope="module")
def seq():
    """A 1 -> 8 cell sequence at 256 px."""
    return render_sequence(3, n_frames=14, size=SIZE)


def test_deterministic_and_seed_dependent():
    a_img, a_fr = render_sequence(5, n_frames=3, size=128, start_cells=2, end_cells=4)
    b_img, b_fr = render_sequence(5, n_frames=3, size=128, start_cells=2, end_cells=4)
    c_img, c_fr = render_sequence(6, n_frames=3, size=128, start_cells=2, end_cells=4)
    np.testing.assert_array_equal(a_img, b_img)
    for fa, fb in zip(a_fr, b_fr):
        np.testing.assert_array_equal(fa.masks, fb.masks)
        np.testing.assert_array_equal(fa.visible, fb.visible)
        np.testing.assert_array_equal(fa.track_ids, fb.track_ids)
    assert not np.array_equal(a_img, c_img)
    assert not np.allclose(a_fr[0].meta["centers_um"][:2], c_fr[0].meta["centers_um"][:2])


def test_shapes_and_dtypes(seq):
    images, frames = seq
    assert images.shape == (14, SIZE, SIZE) and images.dtype == np.uint8
    assert len(frames) == 14
    for t, f in enumerate(frames):
        assert f.frame == t and f.shape == (SIZE, SIZE)
        assert f.masks.dtype == bool and f.visible.shape == f.masks.shape
        assert np.all(f.labels == 1)
    images3, frames3 = render_sequence(1, n_frames=2, size=96, n_planes=3, file_name="x.tif")
    assert images3.shape == (2, 3, 96, 96) and images3.dtype == np.uint8
    assert [f.file_name for f in frames3] == ["x.tif", "x.tif"]
    assert len(frames3[0].meta["focus_z_um"]) == 3
    assert images3.std() > 3  # not a blank image


def test_cell_counts_and_lineage(seq):
    _, frames = seq
    counts = [len(f) for f in frames]
    assert counts[0] == 1 and counts[-1] == 8
    assert all(b >= a for a, b in zip(counts, counts[1:]))
    assert len(set(counts)) >= 4  # intermediate stages are shown
    parent_of: dict[int, int] = {}
    seen: set[int] = set()
    for t, f in enumerate(frames):
        ids = f.track_ids.tolist()
        assert len(set(ids)) == len(ids) and min(ids) >= 1
        for tid, pid in zip(ids, f.parent_ids.tolist()):
            if tid in parent_of:
                assert parent_of[tid] == pid  # the link stays on the daughter
            parent_of[tid] = pid
            if tid not in seen and t > 0:
                # a newborn's mother existed in the previous frame and is gone now
                assert pid in frames[t - 1].track_ids.tolist() and pid not in ids
        seen.update(ids)
    assert all(p == -1 for p in frames[0].parent_ids)


def test_stage_range_and_validation():
    _, frames = render_sequence(2, n_frames=6, size=96, start_cells=2, end_cells=5)
    counts = [len(f) for f in frames]
    assert counts[0] == 2 and counts[-1] == 5
    assert all(f.parent_ids[i] == -1 for f in frames[:1] for i in range(len(f)))
    with pytest.raises(ValueError):
        render_sequence(0, n_frames=2, size=96, start_cells=4, end_cells=2)
    with pytest.raises(ValueError):
        render_sequence(0, n_frames=2, size=96, end_cells=9)


def _ellipse_outline_px(f, i, n=4000):
    """Pixel coordinates (row, col) of points on the 3D ellipsoid's surface,
    projected: an independent route to the amodal outline."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    m = f.meta
    pts = m["centers_um"][i] + (v * m["axes_um"][i]) @ m["rotations"][i].T
    cx, cy = m["center_px"]
    return np.stack([cy + pts[:, 1] / m["um_per_px"], cx + pts[:, 0] / m["um_per_px"]], 1)


def test_amodal_masks_are_projected_ellipses(seq):
    from skimage.measure import label, points_in_poly
    from scipy.spatial import ConvexHull

    _, frames = seq
    for f in frames[::4] + frames[-1:]:
        rows, cols = np.mgrid[0:SIZE, 0:SIZE]
        centres = np.stack([rows.ravel(), cols.ravel()], 1)
        for i, mask in enumerate(f.masks):
            assert mask.sum() > 100
            assert label(mask, connectivity=1).max() == 1
            assert np.array_equal(ndi.binary_fill_holes(mask), mask)
            proj = _ellipse_outline_px(f, i)
            hull = proj[ConvexHull(proj).vertices]
            inside = points_in_poly(centres, hull).reshape(SIZE, SIZE)
            # the sampled hull is slightly inside the true ellipse: allow a 1 px rim
            assert not (inside & ~mask).any()
            rim = mask & ~inside
            assert not (rim & ndi.binary_erosion(mask, iterations=2, border_value=1)).any()


def test_visible_masks(seq):
    _, frames = seq
    for f in frames:
        assert not (f.visible & ~f.masks).any()  # visible within amodal
        assert f.visible.sum(0).max() <= 1  # disjoint
        np.testing.assert_array_equal(f.visible.any(0), f.masks.any(0))  # someone is in front
    late = frames[-1]
    occ = occlusion_from_masks(late.masks)
    assert occ.sum() > 0.02 * late.masks.any(0).sum()
    assert (late.visible.sum((1, 2)) < late.masks.sum((1, 2))).any()  # someone is hidden
    # the hidden parts belong to cells whose front surface is deeper
    m = late.meta
    occluded = [i for i in range(len(late)) if (late.masks[i] & ~late.visible[i]).any()]
    zs = m["centers_um"][:, 2]
    for i in occluded:
        j = np.bincount(
            np.argmax(late.visible[:, late.masks[i] & ~late.visible[i]], axis=0), minlength=len(late)
        ).argmax()
        assert zs[j] - m["axes_um"][j].max() < zs[i]


def test_edges_on_boundaries(seq):
    from skimage.filters import sobel
    from skimage.segmentation import find_boundaries

    images, frames = seq
    ratios = []
    for t in (2, 7, 13):
        f = frames[t]
        grad = sobel(ndi.gaussian_filter(images[t].astype(float), 1.0))
        edge = ndi.binary_dilation(find_boundaries(f.masks.any(0) if len(f) == 1 else _labels(f), mode="inner"))
        all_b = np.zeros(f.shape, bool)
        for m in f.masks:
            all_b |= find_boundaries(m, mode="thick")
        far = f.masks.any(0) & (ndi.distance_transform_edt(~all_b) > 8)
        ratios.append(grad[edge].mean() / grad[far].mean())
    assert np.mean(ratios) > 1.5, ratios


def _labels(f):
    lab = np.zeros(f.shape, np.int32)
    for i, v in enumerate(f.visible):
        lab[v] = i + 1
    return lab


def test_styles_change_the_look():
    dark = EmbryoStyle(background=0.3, contrast=0.12, noise_sigma=0.005)
    bright = EmbryoStyle(background=0.65, contrast=-0.3, noise_sigma=0.03, granularity=0.6)
    a, fa = render_sequence(0, n_frames=1, size=128, start_cells=4, end_cells=4, style=dark)
    b, fb = render_sequence(0, n_frames=1, size=128, start_cells=4, end_cells=4, style=bright)
    assert b.mean() - a.mean() > 40
    assert b.std() > a.std() + 2
    # sampled styles differ too
    s1, s2 = (EmbryoStyle.sample(np.random.default_rng(i)) for i in (1, 2))
    assert s1 != s2 and 0.3 <= s1.um_per_px <= 0.6


def test_daughters_split_the_mothers_volume(seq):
    _, frames = seq
    vol: dict[int, float] = {}
    kids: dict[int, list[int]] = {}
    for f in frames:
        for tid, pid, v in zip(f.track_ids.tolist(), f.parent_ids.tolist(), f.meta["volumes_um3"]):
            if tid in vol:
                assert v == pytest.approx(vol[tid])  # volume is conserved over time
            vol[tid] = float(v)
            if pid >= 0 and tid not in kids.get(pid, []):
                kids.setdefault(pid, []).append(tid)
    assert len(kids) == 7
    for mother, pair in kids.items():
        assert len(pair) == 2
        assert vol[pair[0]] + vol[pair[1]] == pytest.approx(vol[mother], rel=1e-6)
        assert 0.25 < vol[pair[0]] / vol[mother] < 0.75


def test_defocused_planes_are_blurrier():
    style = EmbryoStyle(noise_sigma=0.002, shot_noise=0.0, plane_spacing_um=25.0, focus_offset_um=0.0)
    # a zygote sits at the centre, in the middle plane's focus
    images, frames = render_sequence(4, n_frames=1, size=200, n_planes=3, start_cells=1, end_cells=1, style=style)
    union = frames[0].masks.any(0)
    # stay clear of the zona, whose section moves inwards in the outer planes
    cx, cy = frames[0].meta["center_px"]
    rows, cols = np.mgrid[0:200, 0:200]
    central = np.hypot(rows - cy, cols - cx) < 0.6 * np.sqrt(union.sum() / np.pi)
    cells = ndi.binary_erosion(union, iterations=4) & central
    sharp = [ndi.laplace(images[0, z].astype(float))[cells].var() for z in range(3)]
    assert sharp[1] > 1.3 * sharp[0] and sharp[1] > 1.3 * sharp[2], sharp


def test_write_embryo_dataset(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    from napari_amodal.data.coco import read_coco

    calls = []
    path = write_embryo_dataset(
        tmp_path, n_sequences=2, n_frames=3, seed=7, size=96, n_planes=2, start_cells=2, end_cells=4,
        progress=lambda d, n: calls.append((d, n)),
    )
    assert path == tmp_path / "annotations.json" and calls[-1] == (2, 2)
    frames = read_coco(path)
    assert len(frames) == 6
    for i in range(2):
        name = f"embryo_{i:04d}.tif"
        with tifffile.TiffFile(tmp_path / name) as tif:
            stack = tif.asarray()
            assert tif.series[0].axes == "TZYX"
        assert stack.shape == (3, 2, 96, 96) and stack.dtype == np.uint8
        images, ref = render_sequence(np.random.SeedSequence([7, i]), n_frames=3, size=96, n_planes=2,
                                      start_cells=2, end_cells=4)
        np.testing.assert_array_equal(stack, images)
        got = [f for f in frames if f.file_name == name]
        assert [f.frame for f in got] == [0, 1, 2]
        for g, r in zip(got, ref):
            np.testing.assert_array_equal(g.masks, r.masks)
            np.testing.assert_array_equal(g.visible, r.visible)
            np.testing.assert_array_equal(g.track_ids, r.track_ids)
            np.testing.assert_array_equal(g.parent_ids, r.parent_ids)
    assert EMBRYO_CATEGORIES == [{"id": 1, "name": "blastomere"}]
