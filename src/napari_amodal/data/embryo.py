"""Synthetic IVF embryo time-lapses with exact amodal ground truth.

The scene is physical: blastomeres are 3D ellipsoids packed inside the zona
pellucida's inner sphere, they divide (1 -> 2 -> 4 -> 8, asynchronously inside
each round) and jiggle between frames; the image is a Hoffman-modulation-like
rendering of their optical thickness, and the ground truth is the exact
orthographic projection of each ellipsoid.

Coordinates and conventions:

- World space is in micrometres (um), centred on the zona's centre: ``x`` grows
  with image columns, ``y`` with image rows and ``z`` points *away from the
  camera* (into the dish). The camera looks along +z from ``z = -inf``; the
  projection onto the image is orthographic (drop ``z``).
- A cell's **amodal mask** is the set of pixels whose centre lies inside the
  projected ellipse (exact quadratic-form test ``d^T A d <= 1``), clipped to the
  frame. Its **visible mask** is where it is the front-most cell, i.e. where its
  front surface has the smallest ``z`` among the cells covering the pixel.
  Fragments are clutter: they are drawn but are neither instances nor
  occluders in the ground truth.
- ``track_ids`` start at 1 and are stable through time; a daughter carries its
  mother's track id in ``parent_ids`` in every frame; cells present in frame 0
  have parent -1 (their mothers are never shown).
- Each frame's ``meta`` holds the 3D bodies: ``centers_um`` (N, 3),
  ``axes_um`` (N, 3) semi-axes, ``rotations`` (N, 3, 3) (columns = body axes in
  world space), ``volumes_um3`` (N,), plus ``um_per_px``, ``hours`` (time since
  insemination), ``focus_z_um`` (one per focal plane) and ``center_px``, the
  (x, y) pixel position of the world origin (the zona's centre): a world point
  maps to pixel ``(row, col) = (cy + y / um_per_px, cx + x / um_per_px)``.

Lengths of optical effects in :class:`EmbryoStyle` (blur, granule size,
membrane width) are given in pixels of a 500 px frame and scale with ``size``,
so a 256 px render looks like a downscaled 500 px one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scipy import ndimage as ndi

from ..instances import FrameInstances

__all__ = ["EMBRYO_CATEGORIES", "EmbryoStyle", "render_sequence", "write_embryo_dataset"]

EMBRYO_CATEGORIES = [{"id": 1, "name": "blastomere"}]

REFERENCE_SIZE = 500  # optical lengths in EmbryoStyle are pixels of a frame this wide
MAX_CELLS = 8


# ---------------------------------------------------------------------------
# appearance


@dataclass
class EmbryoStyle:
    """Randomised appearance and geometry of one sequence.

    Physical lengths are micrometres; optical lengths are pixels of a 500 px
    frame (scaled to the rendered ``size``); intensities are fractions of the
    8-bit range (0..1).
    """

    # geometry
    um_per_px: float = 0.40  # pixel size of a 500 px frame
    cytoplasm_diameter_um: float = 110.0  # zygote (1-cell) diameter
    perivitelline_um: float = 5.0  # gap between zygote and zona inner wall
    zona_thickness_um: float = 17.0
    zona_ellipticity: float = 0.02  # relative difference of the ring half-axes
    zona_angle: float = 0.0  # rad
    embryo_offset: tuple[float, float] = (0.0, 0.0)  # (row, col) shift, fraction of size
    cell_flattening: float = 0.82  # daughter axis ratio along the division axis
    division_asymmetry: float = 0.05  # std of a daughter's volume fraction
    overlap_tolerance: float = 0.12  # 3D interpenetration allowed, fraction of radius
    n_fragments: int = 3
    fragment_radius_um: tuple[float, float] = (2.0, 7.0)
    nucleus_prob: float = 0.5  # chance a cell shows its nucleus
    jitter_um: float = 0.8  # random motion of a cell per frame
    drift_px: float = 0.3  # random drift of the whole embryo per frame
    # relief (Hoffman modulation)
    light_angle: float = 0.0  # rad; edges facing this direction in the image are bright
    contrast: float = 0.22  # signed amplitude of the relief; sign = polarity
    saturation: float = 0.5  # phase slope at which the relief saturates
    dome: float = 0.035  # phase per pixel of cell thickness
    membrane: float = 1.5  # phase height of the membrane ridge
    membrane_px: float = 1.2  # membrane ridge width
    granularity: float = 0.35  # phase std of cytoplasmic granules
    granule_px: float = 1.0  # granule size
    fragment_granularity: float = 2.0  # granularity multiplier in fragments
    nucleus_strength: float = 0.5
    absorption: float = 0.05  # signed darkening of thick regions
    zona_strength: float = 2.5  # phase height of the zona ring
    zona_texture: float = 0.15  # relative texture amplitude in the zona
    zona_striation: float = 6.0  # tangential / radial correlation of its texture
    # optics
    psf_px: float = 0.8  # in-focus blur (Gaussian sigma)
    dof_px_per_um: float = 0.09  # extra blur per um away from the focal plane
    focus_offset_um: float = 0.0  # focal plane of the middle plane, from the embryo centre
    plane_spacing_um: float = 15.0
    # photometry
    background: float = 0.5
    illum_gradient: float = 0.1  # brightness change across the frame
    illum_angle: float = 0.0
    vignette: float = 0.1
    mottle: float = 0.015  # low-frequency background texture
    n_debris: int = 4  # static specks in the medium
    noise_sigma: float = 0.015  # additive Gaussian noise
    shot_noise: float = 0.01  # signal-dependent noise, sigma = shot * sqrt(I)
    frame_flicker: float = 0.01  # per-frame brightness change

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "EmbryoStyle":
        """A random style; ranges are wide on purpose (domain randomisation)."""
        u = rng.uniform
        cyto = u(100.0, 122.0)
        zona = float(np.clip(rng.normal(17.0, 4.0), 10.0, 30.0))
        return cls(
            um_per_px=u(0.38, 0.50),
            cytoplasm_diameter_um=cyto,
            perivitelline_um=u(2.0, 10.0),
            zona_thickness_um=zona,
            zona_ellipticity=u(0.0, 0.05),
            zona_angle=u(0, np.pi),
            embryo_offset=tuple(rng.normal(0.0, 0.04, 2).clip(-0.08, 0.08)),
            cell_flattening=u(0.7, 0.92),
            division_asymmetry=u(0.02, 0.09),
            overlap_tolerance=u(0.08, 0.18),
            n_fragments=int(rng.choice([0, 1, 2, 4, 8, 14], p=[0.15, 0.15, 0.2, 0.2, 0.2, 0.1])),
            fragment_radius_um=(u(1.5, 3.0), u(4.0, 10.0)),
            nucleus_prob=u(0.0, 1.0),
            jitter_um=u(0.2, 1.5),
            drift_px=u(0.0, 0.6),
            light_angle=u(0, 2 * np.pi),
            contrast=float(rng.choice([-1.0, 1.0], p=[0.2, 0.8]) * u(0.12, 0.32)),
            saturation=u(0.2, 0.8),
            dome=u(0.015, 0.07),
            membrane=u(1.0, 3.0),
            membrane_px=u(0.8, 2.0),
            granularity=u(0.08, 0.6),
            granule_px=u(0.6, 1.8),
            fragment_granularity=u(1.0, 3.0),
            nucleus_strength=u(0.2, 0.9),
            absorption=u(-0.05, 0.15),
            zona_strength=u(1.5, 4.0),
            zona_texture=u(0.04, 0.3),
            zona_striation=u(2.0, 12.0),
            psf_px=u(0.5, 1.6),
            dof_px_per_um=u(0.04, 0.14),
            focus_offset_um=rng.normal(0.0, 6.0),
            plane_spacing_um=u(10.0, 20.0),
            background=u(0.3, 0.7),
            illum_gradient=u(0.0, 0.3),
            illum_angle=u(0, 2 * np.pi),
            vignette=u(0.0, 0.35),
            mottle=u(0.0, 0.02),
            n_debris=int(rng.integers(0, 15)),
            noise_sigma=u(0.003, 0.03),
            shot_noise=u(0.0, 0.03),
            frame_flicker=u(0.0, 0.02),
        )


# ---------------------------------------------------------------------------
# 3D bodies


@dataclass
class _Body:
    """One ellipsoid: a blastomere (track_id >= 1) or a fragment (track_id 0)."""

    track_id: int
    parent_id: int
    center: np.ndarray  # (3,) um
    axes: np.ndarray  # (3,) semi-axes, um
    rot: np.ndarray  # (3, 3), columns = body axes in world space
    generation: int
    birth_h: float
    tex_anchor: tuple[int, int]
    nuclei: list  # [(offset (2,) as fraction of radius, radius fraction)]
    granularity: float = 1.0

    @property
    def volume(self) -> float:
        return 4.0 / 3.0 * math.pi * float(np.prod(self.axes))

    @property
    def radius(self) -> float:
        """Radius of the sphere of equal volume (um)."""
        return float(np.prod(self.axes)) ** (1.0 / 3.0)

    def support_matrix(self) -> np.ndarray:
        """M = R diag(a^2) R^T: the support function is sqrt(u^T M u)."""
        return (self.rot * self.axes**2) @ self.rot.T

    def quadric(self) -> np.ndarray:
        """Q = R diag(1/a^2) R^T: inside is (p - c)^T Q (p - c) <= 1."""
        return (self.rot / self.axes**2) @ self.rot.T


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _small_rotation(rng: np.random.Generator, angle_sd: float) -> np.ndarray:
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    a = rng.normal(0.0, angle_sd)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def _frame_with_first_axis(u: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rotation whose first column is the unit vector ``u``."""
    v = rng.normal(size=3)
    v -= v.dot(u) * u
    v /= np.linalg.norm(v)
    w = np.cross(u, v)
    return np.stack([u, v, w], 1)


def _relax(bodies: list[_Body], r_in: float, tol: float, iters: int, step: float = 0.5) -> None:
    """Push overlapping ellipsoids apart and back inside the sphere of radius
    ``r_in`` (um). Overlap is measured with support functions along the
    centre-to-centre line; ``tol`` (fraction of the smaller extent) of
    interpenetration is allowed, standing for the cells' deformation."""
    n = len(bodies)
    if n == 0:
        return
    c = np.array([b.center for b in bodies], float)
    m = np.array([b.support_matrix() for b in bodies])
    w = np.array([b.volume for b in bodies])
    for _ in range(iters):
        moved = False
        if n > 1:
            d = c[:, None, :] - c[None, :, :]  # i - j
            dist = np.linalg.norm(d, axis=2)
            np.fill_diagonal(dist, 1.0)
            u = d / np.maximum(dist, 1e-6)[..., None]
            h = np.sqrt(np.einsum("nmi,nij,nmj->nm", u, m, u))  # extent of i towards j
            reach = h + h.T
            over = reach * (1.0 - tol) - dist
            np.fill_diagonal(over, 0.0)
            over = np.maximum(over, 0.0)
            if over.any():
                moved = True
                share = w[None, :] / (w[:, None] + w[None, :])  # light cells move more
                c += step * np.einsum("nm,nmi->ni", over * share, u)
        r = np.linalg.norm(c, axis=1)
        dirs = c / np.maximum(r, 1e-6)[:, None]
        ext = np.sqrt(np.einsum("ni,nij,nj->n", dirs, m, dirs))
        excess = np.maximum(r + ext - r_in, 0.0)
        excess = np.minimum(excess, r)  # never push through the centre
        if excess.any():
            moved = True
            c -= step * excess[:, None] * dirs
        if not moved:
            break
    for b, ci in zip(bodies, c):
        b.center = ci


def _division_schedule(rng: np.random.Generator) -> list[float]:
    """Hours after insemination of the divisions that take the embryo from
    k to k + 1 cells, k = 1..7 (three asynchronous rounds)."""
    t0 = rng.normal(26.0, 2.0)
    t1 = t0 + rng.normal(12.0, 1.5)
    t2 = t1 + rng.normal(13.0, 2.0)
    spread1 = rng.uniform(0.3, 4.0)
    spread2 = rng.uniform(1.0, 10.0)
    events = [t0]
    events += list(t1 + np.sort(np.r_[0.0, rng.uniform(0, spread1, 1)]))
    events += list(t2 + np.sort(np.r_[0.0, rng.uniform(0, spread2, 3)]))
    return [float(e) for e in events]


class _Embryo:
    """The 3D state of one embryo: zona geometry, cells and fragments."""

    def __init__(self, style: EmbryoStyle, rng: np.random.Generator, tex_size: int):
        self.style = style
        self.rng = rng
        self.tex_size = tex_size
        r0 = style.cytoplasm_diameter_um / 2
        self.r_in = r0 + style.perivitelline_um  # zona inner radius (um)
        self.r_out = self.r_in + style.zona_thickness_um
        self.next_id = 1
        axes = r0 * (1 + rng.normal(0, 0.015, 3))
        axes *= r0 / np.prod(axes) ** (1 / 3)
        self.cells = [
            _Body(
                track_id=self._new_id(),
                parent_id=-1,
                center=rng.normal(0, 0.5, 3),
                axes=axes,
                rot=_random_rotation(rng),
                generation=0,
                birth_h=-np.inf,
                tex_anchor=self._anchor(),
                nuclei=self._pronuclei(),
            )
        ]
        self.fragments: list[_Body] = []

    def _new_id(self) -> int:
        i = self.next_id
        self.next_id += 1
        return i

    def _anchor(self) -> tuple[int, int]:
        return tuple(int(v) for v in self.rng.integers(0, self.tex_size, 2))

    def _pronuclei(self) -> list:
        if self.rng.random() >= self.style.nucleus_prob:
            return []
        a = self.rng.uniform(0, 2 * np.pi)
        rf = self.rng.uniform(0.16, 0.22)
        off = np.array([math.sin(a), math.cos(a)]) * rf * 1.05
        shift = self.rng.normal(0, 0.08, 2)
        return [(shift + off, rf), (shift - off, rf * self.rng.uniform(0.85, 1.0))]

    def _nucleus(self) -> list:
        if self.rng.random() >= self.style.nucleus_prob:
            return []
        return [(self.rng.normal(0, 0.15, 2).clip(-0.3, 0.3), self.rng.uniform(0.22, 0.32))]

    def divide(self, generation: int, hour: float) -> None:
        """Split one cell of ``generation`` (larger ones first, mostly)."""
        rng, st = self.rng, self.style
        cand = [i for i, b in enumerate(self.cells) if b.generation == generation]
        if not cand:
            cand = list(range(len(self.cells)))
        if rng.random() < 0.7:
            i = max(cand, key=lambda j: self.cells[j].volume)
        else:
            i = int(rng.choice(cand))
        mother = self.cells.pop(i)
        longest = mother.rot[:, int(np.argmax(mother.axes))]
        u = longest + rng.normal(0, 0.5, 3)
        u /= np.linalg.norm(u)
        f = float(np.clip(rng.normal(0.5, st.division_asymmetry), 0.3, 0.7))
        daughters = []
        for frac, sign in ((f, 1.0), (1.0 - f, -1.0)):
            r_d = mother.radius * frac ** (1 / 3)
            k = st.cell_flattening * rng.uniform(0.95, 1.05)
            e = rng.uniform(0.93, 1.07)
            axes = np.array([r_d * k, r_d / math.sqrt(k) * e, r_d / math.sqrt(k) / e])
            daughters.append(
                _Body(
                    track_id=self._new_id(),
                    parent_id=mother.track_id,
                    center=mother.center + sign * 0.85 * axes[0] * u,
                    axes=axes,
                    rot=_frame_with_first_axis(u, rng),
                    generation=mother.generation + 1,
                    birth_h=hour,
                    tex_anchor=self._anchor(),
                    nuclei=self._nucleus(),
                )
            )
        self.cells[i:i] = daughters

    def add_fragment(self, hour: float) -> None:
        rng, st = self.rng, self.style
        lo, hi = st.fragment_radius_um
        r = rng.uniform(lo, max(lo, hi))
        axes = r * rng.uniform(0.8, 1.2, 3)
        d = rng.normal(size=3)
        d /= np.linalg.norm(d)
        self.fragments.append(
            _Body(
                track_id=0,
                parent_id=-1,
                center=d * (self.r_in - r) * rng.uniform(0.75, 0.98),
                axes=axes,
                rot=_random_rotation(rng),
                generation=-1,
                birth_h=hour,
                tex_anchor=self._anchor(),
                nuclei=[],
                granularity=st.fragment_granularity,
            )
        )

    def step(self, iters: int) -> None:
        """Random motion then relaxation."""
        rng, st = self.rng, self.style
        for b in self.cells + self.fragments:
            b.center = b.center + rng.normal(0, st.jitter_um, 3)
            b.rot = _small_rotation(rng, 0.02) @ b.rot
        self.relax(iters)

    def relax(self, iters: int) -> None:
        _relax(self.cells + self.fragments, self.r_in, self.style.overlap_tolerance, iters)

    def relabel(self) -> None:
        """Renumber the current cells 1..N without parents (start of a sequence)."""
        for i, b in enumerate(self.cells, start=1):
            b.track_id, b.parent_id = i, -1
        self.next_id = len(self.cells) + 1


# ---------------------------------------------------------------------------
# textures


def _bandpass_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """Granular texture: difference-of-Gaussians noise with std 1 (float32)."""
    white = rng.standard_normal(shape).astype(np.float32)
    a = ndi.gaussian_filter(white, max(sigma * 0.5, 0.3))
    b = ndi.gaussian_filter(white, max(sigma * 1.6, 0.8))
    g = a - b
    g /= g.std() + 1e-8
    # sharpen the grains a little (heavier tails look more like refractile granules)
    return (np.sign(g) * np.abs(g) ** 1.3).astype(np.float32) / 1.2


class _Scene:
    """Per-sequence static rendering state: textures, illumination, debris."""

    def __init__(self, style: EmbryoStyle, rng: np.random.Generator, size: int):
        self.size = size
        self.k = size / REFERENCE_SIZE
        self.um_per_px = style.um_per_px / self.k
        self.tex_size = 2 * size
        self.granules = _bandpass_noise(rng, (self.tex_size, self.tex_size), style.granule_px * self.k)
        # zona texture table: (radial fraction, angle)
        # about one texel per pixel, so the texture has the same look at any size
        r_out_um = style.cytoplasm_diameter_um / 2 + style.perivitelline_um + style.zona_thickness_um
        n_r = max(int(round(style.zona_thickness_um / self.um_per_px)), 4)
        n_t = max(int(round(2 * np.pi * r_out_um / self.um_per_px)), 64)
        z = rng.standard_normal((n_r, n_t)).astype(np.float32)
        z = ndi.gaussian_filter(z, (1.5 * self.k, style.zona_striation * self.k), mode=("nearest", "wrap"))
        z /= z.std() + 1e-8
        z += 0.5 * _bandpass_noise(rng, (n_r, n_t), 0.9 * self.k)  # fine grain
        z /= z.std() + 1e-8
        self.zona_tex = z
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        yy = (yy - size / 2) / size
        xx = (xx - size / 2) / size
        grad = (xx * math.cos(style.illum_angle) + yy * math.sin(style.illum_angle)) * style.illum_gradient
        vig = style.vignette * (xx**2 + yy**2) * 2
        mottle = ndi.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 30 * self.k)
        mottle *= style.mottle / (mottle.std() + 1e-8)
        self.illum = (1.0 + grad - vig + mottle).astype(np.float32)
        # static specks of debris in the medium: small phase bumps
        debris = np.zeros((size, size), np.float32)
        for _ in range(style.n_debris):
            r, c = rng.integers(0, size, 2)
            debris[r, c] += rng.uniform(-1, 1) * rng.uniform(5, 40)
        self.debris = ndi.gaussian_filter(debris, rng.uniform(1.0, 3.0) * self.k) if style.n_debris else debris


# ---------------------------------------------------------------------------
# rendering


def _ellipse_geometry(body: _Body, center_px: np.ndarray, s: float):
    """Projected-ellipse quantities of a body in pixel units.

    Returns ``(A, q, q33, half)``: the 2D quadratic form (x, y order) of the
    silhouette, the x/y-z coupling and z-z entries of the quadric in pixels,
    and the half extents (hx, hy) in pixels.
    """
    qm = body.quadric() * s * s
    q = qm[:2, 2]
    q33 = qm[2, 2]
    a = qm[:2, :2] - np.outer(q, q) / q33
    mm = body.support_matrix() / (s * s)
    half = np.sqrt(np.diag(mm)[:2])
    return a, q, q33, half


def _box(cx: float, cy: float, hx: float, hy: float, pad: float, size: int):
    x0 = max(int(math.floor(cx - hx - pad)), 0)
    x1 = min(int(math.ceil(cx + hx + pad)) + 1, size)
    y0 = max(int(math.floor(cy - hy - pad)), 0)
    y1 = min(int(math.ceil(cy + hy + pad)) + 1, size)
    return y0, y1, x0, x1


def _body_phase(body: _Body, cx, cy, a, q33, box, scene: _Scene, style: EmbryoStyle, nuclei_on: bool):
    """Unblurred phase (optical thickness) of a body in its box, and its
    silhouette quantities ``(rho2, dx, dy)`` for the masks."""
    y0, y1, x0, x1 = box
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    gx = a[0, 0] * dx + a[0, 1] * dy
    gy = a[0, 1] * dx + a[1, 1] * dy
    rho2 = dx * gx + dy * gy
    inner = np.maximum(1.0 - rho2, 0.0)
    thick = 2.0 * np.sqrt(inner / q33)  # pixels of thickness along z
    rho = np.sqrt(rho2)
    # signed distance to the outline (pixels), first order
    dist = (rho - 1.0) * rho / np.maximum(np.sqrt(gx * gx + gy * gy), 1e-6)
    k = scene.k
    w = style.membrane_px * k
    phase = style.dome * k * thick + style.membrane * np.exp(-((dist / w) ** 2))
    ty = (np.arange(y0, y1) - int(round(cy)) + body.tex_anchor[0]) % scene.tex_size
    tx = (np.arange(x0, x1) - int(round(cx)) + body.tex_anchor[1]) % scene.tex_size
    gran = scene.granules[np.ix_(ty, tx)] * (style.granularity * body.granularity) * np.minimum(inner * 6.0, 1.0)
    if nuclei_on and body.nuclei:
        r_px = body.radius / scene.um_per_px
        for off, rf in body.nuclei:
            ncx, ncy = cx + off[1] * r_px, cy + off[0] * r_px
            rn = rf * r_px
            rn_d = np.sqrt((dx - (ncx - cx)) ** 2 + (dy - (ncy - cy)) ** 2) - rn  # signed distance
            soft = 1.0 / (1.0 + np.exp(np.clip(rn_d / (1.5 * k), -30, 30)))
            gran *= 1.0 - 0.85 * soft
            phase += style.nucleus_strength * (np.exp(-((rn_d / (1.3 * w)) ** 2)) - 0.4 * soft)
    phase += gran
    return phase.astype(np.float32), rho2


def _zona_phase(scene: _Scene, style: EmbryoStyle, embryo: _Embryo, center_px, z_focus: float, out: np.ndarray):
    """Add the zona's cross-section at depth ``z_focus`` (um) to ``out``."""
    s, k, size = scene.um_per_px, scene.k, scene.size
    r_o = math.sqrt(max(embryo.r_out**2 - z_focus**2, 0.0)) / s
    r_i = math.sqrt(max(embryo.r_in**2 - z_focus**2, 0.0)) / s
    if r_o <= 0:
        return
    e = style.zona_ellipticity
    pad = 4 * k + 2
    cx, cy = center_px
    box = _box(cx, cy, r_o * (1 + e), r_o * (1 + e), pad, size)
    y0, y1, x0, x1 = box
    if y1 <= y0 or x1 <= x0:
        return
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    ca, sa = math.cos(style.zona_angle), math.sin(style.zona_angle)
    u = (dx * ca + dy * sa) / (1 + e)
    v = (-dx * sa + dy * ca) / (1 - e)
    r = np.sqrt(u * u + v * v)
    w = 0.7 * k
    ring = 1.0 / (1.0 + np.exp(np.clip((r_i - r) / w, -30, 30))) / (1.0 + np.exp(np.clip((r - r_o) / w, -30, 30)))
    sel = ring > 1e-3
    n_r, n_t = scene.zona_tex.shape
    frac = (r[sel] - r_i) / max(r_o - r_i, 1.0)
    ri = np.clip(np.round(frac * (n_r - 1)), 0, n_r - 1).astype(np.intp)
    ti = (np.round(np.arctan2(v[sel], u[sel]) * (n_t / (2 * np.pi))).astype(np.intp)) % n_t
    tex = np.zeros_like(r)
    tex[sel] = scene.zona_tex[ri, ti]
    # a slight radial profile: the inner layer of the zona is denser
    prof = 1.0 + 0.3 * np.clip(1.0 - (r - r_i) / max(r_o - r_i, 1.0), 0, 1)
    out[y0:y1, x0:x1] += style.zona_strength * ring * (prof + style.zona_texture * tex)


def _hoffman(phase: np.ndarray, scene: _Scene, style: EmbryoStyle, angle: float, bg: float, ref: float):
    """Phase map -> intensity in 0..1 (before noise): relief along ``angle``
    (derivative of the phase), absorption of thick regions, illumination."""
    gy, gx = np.gradient(phase)
    d = gx * math.cos(angle) + gy * math.sin(angle)
    relief = style.contrast * np.tanh(d / style.saturation)
    absorb = style.absorption * np.clip(phase / ref, 0, 3)
    return scene.illum * (bg + relief - absorb)


def _render_frame(
    embryo: _Embryo,
    scene: _Scene,
    style: EmbryoStyle,
    rng: np.random.Generator,
    center_px: np.ndarray,
    z_planes: np.ndarray,
    hour: float,
    first_event_h: float,
):
    """Images (P, H, W) uint8, amodal and visible masks (N, H, W) bool."""
    size, s, k = scene.size, scene.um_per_px, scene.k
    n_planes = len(z_planes)
    phase = np.repeat(scene.debris[None], n_planes, axis=0)
    cells, frags = embryo.cells, embryo.fragments
    masks = np.zeros((len(cells), size, size), bool)
    depth = np.full((size, size), np.inf, np.float32)
    owner = np.full((size, size), -1, np.int32)
    for zi, z in enumerate(z_planes):
        _zona_phase(scene, style, embryo, center_px, float(z), phase[zi])
    if style.psf_px * k > 0.3:  # the zona's section is in focus in every plane
        for zi in range(n_planes):
            phase[zi] = ndi.gaussian_filter(phase[zi], style.psf_px * k)
    for idx, body in enumerate(cells + frags):
        is_cell = idx < len(cells)
        cx = center_px[0] + body.center[0] / s
        cy = center_px[1] + body.center[1] / s
        a, q, q33, half = _ellipse_geometry(body, center_px, s)
        sig = k * (style.psf_px + style.dof_px_per_um * np.abs(body.center[2] - z_planes))
        pad = 3.0 * float(sig.max()) + 3.0 * style.membrane_px * k + 2.0
        box = _box(cx, cy, half[0], half[1], pad, size)
        y0, y1, x0, x1 = box
        if y1 <= y0 or x1 <= x0:
            continue
        if body.generation == 0:  # zygote: pronuclei fade before the first cleavage
            nuclei_on = hour < first_event_h - 2.0
        else:
            nuclei_on = hour > body.birth_h + 1.5
        ph, rho2 = _body_phase(body, cx, cy, a, q33, box, scene, style, nuclei_on)
        for zi in range(n_planes):
            phase[zi, y0:y1, x0:x1] += ndi.gaussian_filter(ph, float(sig[zi]), mode="nearest")
        if not is_cell:
            continue
        inside = rho2 <= 1.0
        masks[idx, y0:y1, x0:x1] = inside
        # front surface z (um): smaller is nearer to the camera
        dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
        b = q[0] * dx + q[1] * dy
        front = body.center[2] + s * (-b - np.sqrt(q33 * np.maximum(1.0 - rho2, 0.0))) / q33
        sub_d, sub_o = depth[y0:y1, x0:x1], owner[y0:y1, x0:x1]
        upd = inside & (front < sub_d)
        sub_d[upd] = front[upd]
        sub_o[upd] = idx
    visible = owner[None] == np.arange(len(cells), dtype=np.int32)[:, None, None]
    # photometry, a little different in every frame
    ref = style.dome * k * embryo.r_in / s * 2.0 + 1e-3
    bg = style.background * (1.0 + rng.normal(0, style.frame_flicker))
    angle = style.light_angle + rng.normal(0, 0.03)
    noise = style.noise_sigma * rng.uniform(0.85, 1.15)
    images = np.empty((n_planes, size, size), np.uint8)
    for zi in range(n_planes):
        img = _hoffman(phase[zi], scene, style, angle, bg, ref)
        img += rng.standard_normal(img.shape, dtype=np.float32) * (
            noise + style.shot_noise * np.sqrt(np.clip(img, 0, None))
        )
        images[zi] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return images, masks, visible


# ---------------------------------------------------------------------------
# public API


def _frame_hours(events: list[float], start_cells: int, end_cells: int, n_frames: int, rng) -> np.ndarray:
    """Times (h) of the frames so that frame 0 shows ``start_cells`` and the
    last frame ``end_cells``."""
    if end_cells > start_cells:
        first = events[start_cells - 1]
        last = events[end_cells - 2]
        span = max(last - (events[start_cells - 2] if start_cells > 1 else first - 8.0), 4.0)
        if start_cells == 1:
            h0 = first - rng.uniform(0.1, 0.3) * span
        else:
            h0 = events[start_cells - 2] + rng.uniform(0.02, 0.25) * (first - events[start_cells - 2])
        h1 = last + rng.uniform(0.08, 0.2) * span
    else:
        lo = events[start_cells - 2] if start_cells > 1 else events[0] - 10.0
        hi = events[start_cells - 1] if start_cells < MAX_CELLS else lo + 12.0
        h0 = lo + 0.05 * (hi - lo)
        h1 = hi - 0.05 * (hi - lo)
    return np.linspace(h0, h1, n_frames) if n_frames > 1 else np.array([h0])


def _iter_sequence(
    rng: np.random.Generator,
    n_frames: int,
    size: int,
    n_planes: int,
    start_cells: int,
    end_cells: int,
    file_name: str,
    style: EmbryoStyle,
) -> Iterator[tuple[np.ndarray, FrameInstances]]:
    if not 1 <= start_cells <= end_cells <= MAX_CELLS:
        raise ValueError(f"need 1 <= start_cells <= end_cells <= {MAX_CELLS}, got {start_cells}, {end_cells}")
    if n_frames < 1 or size < 32 or n_planes < 1:
        raise ValueError("n_frames and n_planes must be >= 1 and size >= 32")
    scene = _Scene(style, rng, size)
    embryo = _Embryo(style, rng, scene.tex_size)
    events = _division_schedule(rng)  # events[i]: i + 1 -> i + 2 cells
    generations = [int(math.log2(c)) for c in range(1, MAX_CELLS)]
    hours = _frame_hours(events, start_cells, end_cells, n_frames, rng)
    frag_hours = np.sort(rng.uniform(events[0] - 4.0, max(hours[-1], events[0]), style.n_fragments))
    # bring the embryo to the starting stage
    n_done = 0
    embryo.relax(40)
    while n_done < start_cells - 1:
        embryo.divide(generations[n_done], events[n_done])
        embryo.relax(60)
        n_done += 1
    embryo.relabel()
    n_frag = 0
    while n_frag < len(frag_hours) and frag_hours[n_frag] <= hours[0]:
        embryo.add_fragment(-np.inf)
        n_frag += 1
    embryo.relax(60)
    mid = n_planes // 2
    z_planes = style.focus_offset_um + (np.arange(n_planes) - mid) * style.plane_spacing_um
    off = np.array(style.embryo_offset[::-1]) * size  # (x, y)
    center = np.array([size / 2, size / 2]) + off
    for t, hour in enumerate(hours):
        if t > 0:
            while n_done < end_cells - 1 and events[n_done] <= hour:
                embryo.divide(generations[n_done], events[n_done])
                n_done += 1
            while n_frag < len(frag_hours) and frag_hours[n_frag] <= hour:
                embryo.add_fragment(float(frag_hours[n_frag]))
                n_frag += 1
            embryo.step(12)
            center = center + rng.normal(0, style.drift_px * scene.k, 2)
        zf = z_planes + rng.normal(0, 1.0)
        images, masks, visible = _render_frame(embryo, scene, style, rng, center, zf, float(hour), events[0])
        cells = embryo.cells
        inst = FrameInstances.from_masks(
            masks,
            shape=(size, size),
            labels=np.ones(len(cells), np.int64),
            track_ids=[b.track_id for b in cells],
            parent_ids=[b.parent_id for b in cells],
            visible=visible,
            frame=t,
            file_name=file_name,
            meta={
                "centers_um": np.array([b.center for b in cells]).reshape(-1, 3),
                "axes_um": np.array([b.axes for b in cells]).reshape(-1, 3),
                "rotations": np.array([b.rot for b in cells]).reshape(-1, 3, 3),
                "volumes_um3": np.array([b.volume for b in cells]),
                "um_per_px": scene.um_per_px,
                "hours": float(hour),
                "focus_z_um": [float(z) for z in zf],
                "center_px": (float(center[0]), float(center[1])),
            },
        )
        yield (images if n_planes > 1 else images[0]), inst


def render_sequence(
    seed: int,
    n_frames: int = 40,
    size: int = 500,
    n_planes: int = 1,
    start_cells: int = 1,
    end_cells: int = 8,
    file_name: str = "",
    style: EmbryoStyle | None = None,
) -> tuple[np.ndarray, list[FrameInstances]]:
    """Render one synthetic embryo time-lapse and its amodal ground truth.

    Args:
        seed: anything ``np.random.default_rng`` accepts (int or SeedSequence);
            the whole sequence (style, motion, noise) follows from it.
        n_frames: number of time points T. Frame times are spread evenly from
            just before the division into ``start_cells + 1`` cells (or, when
            ``start_cells == 1``, some hours before the first cleavage) to a
            little after the division that makes ``end_cells`` cells.
        size: frame height = width in pixels.
        n_planes: focal planes Z, ``style.plane_spacing_um`` apart, centred on
            the embryo (the middle plane, index ``Z // 2``, is the in-focus one).
        start_cells, end_cells: cell counts of the first and last frame
            (1 <= start <= end <= 8); counts never decrease in between.
        file_name: written into every frame's ``FrameInstances.file_name``.
        style: appearance; ``EmbryoStyle.sample(rng)`` when None.

    Returns:
        images: (T, Y, X) uint8, or (T, Z, Y, X) uint8 when ``n_planes > 1``.
        frames: one :class:`FrameInstances` per time point (the amodal ground
            truth is the same for every plane); see the module docstring for the
            visibility, track and ``meta`` conventions.
    """
    rng = np.random.default_rng(seed)
    if style is None:
        style = EmbryoStyle.sample(rng)
    out = list(_iter_sequence(rng, n_frames, size, n_planes, start_cells, end_cells, file_name, style))
    images = np.stack([im for im, _ in out])
    return images, [f for _, f in out]


def write_embryo_dataset(
    out_dir,
    n_sequences: int,
    n_frames: int = 40,
    seed: int = 0,
    size: int = 500,
    n_planes: int = 1,
    start_cells: int = 1,
    end_cells: int = 8,
    json_name: str = "annotations.json",
    progress: Callable[[int, int], None] | None = None,
    first: int = 0,
) -> Path:
    """Write ``out_dir/embryo_{i:04d}.tif`` per sequence and one COCO-amodal JSON.

    TIFFs are (T, Y, X) or (T, Z, Y, X) uint8 with ``axes`` 'TYX' / 'TZYX' in
    their metadata, zlib-compressed. Sequence ``i`` uses the seed
    ``np.random.SeedSequence([seed, i])``, so adding sequences never changes
    earlier ones. ``file_name`` in the JSON is the TIFF's name (relative to the
    JSON), ``frame`` the time index. ``progress(done, total)`` is called after
    each sequence. ``first`` numbers the sequences ``first .. first + n_sequences - 1``
    (a set can be rendered in parts). Returns the JSON path.
    """
    import tifffile

    from .coco import write_coco

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    axes = "TZYX" if n_planes > 1 else "TYX"

    def frames() -> Iterator[FrameInstances]:
        for i in range(first, first + n_sequences):
            name = f"embryo_{i:04d}.tif"
            images, insts = render_sequence(
                np.random.SeedSequence([seed, i]),
                n_frames=n_frames,
                size=size,
                n_planes=n_planes,
                start_cells=start_cells,
                end_cells=end_cells,
                file_name=name,
            )
            tifffile.imwrite(out_dir / name, images, compression="zlib", metadata={"axes": axes})
            for f in insts:
                f.meta = {}  # the 3D bodies stay out of the annotation file
                yield f
            if progress is not None:
                progress(i + 1 - first, n_sequences)

    json_path = out_dir / json_name
    write_coco(
        json_path,
        frames(),
        EMBRYO_CATEGORIES,
        predictions=False,
        info={"generator": "embryo", "seed": seed, "n_planes": n_planes},
    )
    return json_path
