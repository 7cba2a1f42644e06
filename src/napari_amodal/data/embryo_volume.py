"""A second synthetic embryo family: images formed from a 3-D refractive-index volume.

Written independently of :mod:`napari_amodal.data.embryo` (the "hoffman"
family) so that training on one family and testing on the other measures how
well a model generalises to embryo images it was not made for. What differs
is the model of every stage, not its parameters:

- **Cells** are star-shaped bodies: a footprint contour with random Fourier
  modes (2..6), flattened where neighbours press on it, and a dome-shaped
  thickness; cells pack by sphere repulsion inside the zona. Lineages go from
  the zygote (two pronuclei, polar bodies) to 16 cells, optionally ending in
  compaction (boundaries fade; those frames have no countable cells).
- **Image formation**: the volume is cut into slabs along the optical axis;
  each slab's optical path difference (cells, membranes, nuclei, 3-D granules,
  a spherical-shell zona, fragments) is blurred by its own defocus and summed,
  then turned into an image by one of three microscopes: DIC (interference of
  two sheared beams with a bias), Zernike phase contrast (with halo) or
  defocused bright field (transport-of-intensity contrast). Polarity, shear
  direction and bias vary per time-lapse.
- **Camera**: uneven Koehler illumination with out-of-focus dust rings, Poisson
  photon noise, read noise, offset, 8-, 12- (in 16) or 16-bit output.
- **Coverage**: zoom 0.5x..2x (pixel size 0.2..0.9 um), frames 256..1024 px,
  embryos partly outside the frame, focus drift with occasional out-of-focus
  frames, empty dishes, debris.

Ground truth follows the package conventions (:class:`FrameInstances`): a
cell's amodal mask is its footprint (clipped to the frame), its visible mask
where its front surface is nearest the camera; fragments, polar bodies and
debris are not instances. ``frame.meta["state"]`` is ``"cells"``,
``"compacted"`` (the embryo is there, its cells cannot be told apart: no
instances) or ``"empty"`` (no embryo in view); ``write_volume_dataset`` stores
it as ``state`` in each COCO image entry.

Units: micrometres (um) for the scene, pixels for the image; ``z`` grows away
from the camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from scipy import ndimage as ndi

from ..instances import FrameInstances

__all__ = ["VolumeStyle", "render_volume_sequence", "write_volume_dataset", "FRAME_STATES"]

FRAME_STATES = ("cells", "compacted", "empty")
MAX_CELLS = 16
MICROSCOPES = ("dic", "phase", "brightfield")


@dataclass
class VolumeStyle:
    """What one time-lapse looks like (sampled per sequence by :meth:`sample`)."""

    microscope: str = "dic"
    size: int = 500  # frame side, px
    um_per_px: float = 0.45
    bit_depth: int = 8  # 8, 12 (in a 16-bit container) or 16
    center_frac: tuple[float, float] = (0.5, 0.5)  # embryo centre (row, col) as a fraction of the frame
    cyto_radius_um: float = 57.0
    zona_inner_um: float = 62.0
    zona_um: float = 17.0
    shape_roughness: float = 0.04  # std of the contour's Fourier amplitudes
    cell_dn: float = 0.03  # refractive-index step of cytoplasm (x 2 pi / wavelength folded in: rad per um)
    membrane_dn: float = 0.05
    nucleus_dn: float = -0.02
    zona_dn: float = 0.02
    granules_per_cell: int = 300
    granule_dn: float = 0.25
    fragments: int = 3
    polar_bodies: int = 1
    debris: int = 5
    defocus_px_per_um: float = 0.12  # blur sigma per um between slab and focal plane
    focus_um: float = 0.0
    focus_walk_um: float = 0.6  # random walk of the focus per frame
    focus_jump_p: float = 0.02  # chance a frame is far out of focus
    shear_angle: float = 0.8  # DIC
    shear_px: float = 1.0
    bias: float = 0.6  # DIC bias retardation (rad); its sign is the relief polarity
    halo_px: float = 8.0  # phase contrast
    phase_ring: float = 0.7
    defocus_gain: float = 3.0  # bright field
    absorption: float = 0.02
    photons: float = 600.0  # at background
    read_noise: float = 3.0  # in counts of the output bit depth / 255 scale
    illum_poly: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    dust_rings: int = 2
    level: float = 0.45  # background as a fraction of full scale
    gain: float = 1.3  # object contrast multiplier
    compacts: bool = False
    empty: bool = False

    @classmethod
    def sample(cls, rng: np.random.Generator, size: int | None = None) -> "VolumeStyle":
        """A random time-lapse appearance; ranges cover clinical incubators and research scopes."""
        u = rng.uniform
        size = int(size or rng.choice([256, 320, 384, 500, 500, 640, 768, 1024]))
        zoom = float(np.exp(u(np.log(0.5), np.log(2.0))))  # relative to filling ~3/4 of the frame
        um_per_px = float(np.clip(160.0 / (0.75 * size * zoom), 0.12, 1.4))
        off = 0.5 + rng.normal(0, 0.05, 2)
        if rng.random() < 0.15:  # partly outside the frame
            off = 0.5 + rng.choice([-1, 1], 2) * u(0.25, 0.55, 2)
        cyto = u(48.0, 62.0)
        return cls(
            microscope=str(rng.choice(MICROSCOPES, p=[0.45, 0.3, 0.25])),
            size=size,
            um_per_px=um_per_px,
            bit_depth=int(rng.choice([8, 12, 16], p=[0.6, 0.2, 0.2])),
            center_frac=(float(off[0]), float(off[1])),
            cyto_radius_um=cyto,
            zona_inner_um=cyto + u(1.5, 9.0),
            zona_um=float(np.clip(rng.normal(17, 4), 9, 30)),
            shape_roughness=u(0.01, 0.07),
            cell_dn=u(0.015, 0.05),
            membrane_dn=u(0.0, 0.08),
            nucleus_dn=u(-0.03, 0.01),
            zona_dn=u(0.01, 0.04),
            granules_per_cell=int(u(50, 900)),
            granule_dn=u(0.05, 0.5),
            fragments=int(rng.choice([0, 0, 1, 2, 4, 8, 16])),
            polar_bodies=int(rng.integers(0, 3)),
            debris=int(rng.integers(0, 20)),
            defocus_px_per_um=u(0.05, 0.2),
            focus_um=rng.normal(0, 8),
            focus_walk_um=u(0.0, 1.5),
            focus_jump_p=u(0.0, 0.05),
            shear_angle=u(0, 2 * np.pi),
            shear_px=u(0.6, 2.0),
            bias=float(rng.choice([-1, 1]) * u(0.25, 1.2)),
            halo_px=u(4.0, 16.0),
            phase_ring=u(0.4, 0.9),
            defocus_gain=float(rng.choice([-1, 1]) * u(1.0, 6.0)),
            absorption=u(-0.02, 0.06),
            photons=float(np.exp(u(np.log(60), np.log(4000)))),
            read_noise=u(0.5, 6.0),
            illum_poly=tuple(rng.normal(0, 0.08, 5)),
            dust_rings=int(rng.integers(0, 6)),
            level=u(0.2, 0.7),
            gain=u(0.6, 2.0),
            compacts=bool(rng.random() < 0.15),
            empty=bool(rng.random() < 0.04),
        )


# ---------------------------------------------------------------------------
# the scene


@dataclass
class _Cell:
    """A blastomere (track >= 1) or a non-cell body (fragment / polar body: track 0)."""

    track: int
    parent: int
    center: np.ndarray  # (3,) um
    radius: float  # um, of the sphere of equal volume
    modes: np.ndarray  # (K, 2) Fourier (cos, sin) amplitudes of the contour, k = 2..K+1
    z_ratio: float  # thickness semi-axis / in-plane radius
    granules: np.ndarray  # (G, 3) offsets as fractions of the radius
    nuclei: list = field(default_factory=list)  # [(offset (3,) fraction, radius fraction)]


class _Lineage:
    """Cells that divide 1 -> 2 -> ... -> 16 inside the zona and jiggle in between."""

    def __init__(self, style: VolumeStyle, rng: np.random.Generator):
        self.style, self.rng, self.next_track = style, rng, 1
        zygote = self._cell(0, np.zeros(3), style.cyto_radius_um)
        zygote.nuclei = [(np.array([s * 0.18, rng.normal(0, 0.05), 0.0]), 0.16) for s in (-1, 1)]  # pronuclei
        self.cells = [zygote]
        self.others = [self._body(style.cyto_radius_um + 2.5, rng.uniform(4, 7)) for _ in range(style.polar_bodies)]
        self.others += [self._body(rng.uniform(0.2, 0.9) * style.cyto_radius_um, rng.uniform(2, 8))
                        for _ in range(style.fragments)]

    def _cell(self, parent: int, center: np.ndarray, radius: float) -> _Cell:
        rng, k = self.rng, 5
        track, self.next_track = self.next_track, self.next_track + 1
        g = rng.normal(size=(self.style.granules_per_cell, 3))
        g *= (rng.random(len(g)) ** (1 / 3) / np.linalg.norm(g, axis=1))[:, None] * 0.9
        return _Cell(track, parent, center.astype(float), radius,
                     rng.normal(0, self.style.shape_roughness, (k, 2)) / np.arange(1, k + 1)[:, None] ** 0.5,
                     rng.uniform(0.75, 1.05), g)

    def _body(self, dist: float, radius: float) -> _Cell:
        d = self.rng.normal(size=3)
        c = _Cell(0, -1, d / np.linalg.norm(d) * dist, radius, np.zeros((1, 2)), 1.0, np.zeros((0, 3)))
        return c

    def divide(self, born: set[int] | None = None) -> bool:
        """Divide the largest (then oldest) cell not in ``born`` in two; the
        daughters' tracks join ``born``. False when every cell was just born."""
        born = set() if born is None else born
        ready = [c for c in self.cells if c.track not in born]
        if not ready:
            return False
        mother = max(ready, key=lambda c: (c.radius, -c.track))
        axis = self.rng.normal(size=3)
        axis[2] *= 0.5  # cleavage planes are mostly seen side-on
        axis /= np.linalg.norm(axis)
        frac = float(np.clip(self.rng.normal(0.5, 0.05), 0.3, 0.7))
        self.cells.remove(mother)
        for f, sign in ((frac, 1), (1 - frac, -1)):
            r = mother.radius * f ** (1 / 3)
            d = self._cell(mother.track, mother.center + sign * axis * r * 0.6, r)
            if self.rng.random() < 0.6:
                d.nuclei = [(self.rng.normal(0, 0.15, 3), 0.22)]
            self.cells.append(d)
            born.add(d.track)
        return True

    def settle(self, iters: int = 40) -> None:
        """Sphere repulsion (15 % interpenetration allowed: cells deform) inside the zona."""
        c = np.array([x.center for x in self.cells])
        r = np.array([x.radius for x in self.cells])
        limit = self.style.zona_inner_um
        for _ in range(iters):
            d = c[:, None] - c[None]
            dist = np.linalg.norm(d, axis=2) + np.eye(len(c))
            over = np.maximum((r[:, None] + r[None]) * 0.85 - dist, 0) * (1 - np.eye(len(c)))
            c += 0.5 * np.einsum("ij,ijk->ik", over / 2, d / dist[..., None])
            out = np.maximum(np.linalg.norm(c, axis=1) + r * 0.9 - limit, 0)
            c -= 0.5 * out[:, None] * c / np.maximum(np.linalg.norm(c, axis=1), 1e-6)[:, None]
        for x, ci in zip(self.cells, c):
            x.center = ci

    def jiggle(self) -> None:
        for x in self.cells + self.others:
            x.center = x.center + self.rng.normal(0, 0.6, 3)


# ---------------------------------------------------------------------------
# geometry of one frame


def _contour_scale(cell: _Cell, theta: np.ndarray, neighbours: list[tuple[float, float]]) -> np.ndarray:
    """Relative footprint radius along image angles ``theta`` (rad): Fourier modes,
    flattened towards each pressing neighbour ``(angle, squeeze)``."""
    k = np.arange(2, 2 + len(cell.modes))[:, None]
    s = 1 + (cell.modes[:, :1] * np.cos(k * theta.ravel()) + cell.modes[:, 1:] * np.sin(k * theta.ravel())).sum(0)
    for angle, squeeze in neighbours:
        s = s * (1 - squeeze * np.maximum(np.cos(theta.ravel() - angle), 0) ** 6)
    return s.reshape(theta.shape)


def _neighbours(cells: list[_Cell], i: int) -> list[tuple[float, float]]:
    """Directions (image angle) and squeeze of the cells pressing on cell ``i`` in the image plane."""
    out = []
    for j, other in enumerate(cells):
        if j == i:
            continue
        d = other.center - cells[i].center
        dist = float(np.linalg.norm(d))
        overlap = (cells[i].radius + other.radius) - dist
        planar = float(np.hypot(d[0], d[1])) / max(dist, 1e-6)
        if overlap > 0 and planar > 0.3:
            out.append((float(np.arctan2(d[0], d[1])), min(0.35, overlap / cells[i].radius * planar * 0.6)))
    return out


@dataclass
class _Footprint:
    """A cell's footprint in a frame: pixel box, normalised radius rho (<= 1 inside)."""

    box: tuple[int, int, int, int]  # r0, r1, c0, c1 (clipped to the frame)
    rho: np.ndarray  # (r1 - r0, c1 - c0)
    z: float  # centre depth, um
    half_thick: float  # um


def _footprint(cell: _Cell, neighbours, style: VolumeStyle, centre_px: np.ndarray) -> _Footprint | None:
    s = style.size
    rad_px = cell.radius / style.um_per_px
    cy, cx = centre_px + cell.center[:2][::-1] / style.um_per_px * np.array([1, 1])
    reach = rad_px * 1.5 + 2
    r0, r1 = int(max(cy - reach, 0)), int(min(cy + reach + 1, s))
    c0, c1 = int(max(cx - reach, 0)), int(min(cx + reach + 1, s))
    if r1 <= r0 or c1 <= c0:
        return None
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    scale = _contour_scale(cell, np.arctan2(dy, dx), neighbours)
    rho = np.hypot(dy, dx) / np.maximum(rad_px * scale, 1e-3)
    return _Footprint((r0, r1, c0, c1), rho, float(cell.center[2]), cell.radius * cell.z_ratio)


# ---------------------------------------------------------------------------
# optics


def _slab_depths(style: VolumeStyle) -> np.ndarray:
    """Centres (um) of the slabs the volume is cut into, over the zona's depth."""
    r = style.zona_inner_um + style.zona_um
    return np.linspace(-r, r, 13)


def _compact_ball(cells: list) -> _Cell:
    """The compacted embryo: one smooth body holding the cells' volume."""
    centre = np.mean([c.center for c in cells], 0)
    radius = float(np.sum([c.radius**3 for c in cells]) ** (1 / 3)) * 0.97
    return _Cell(0, -1, centre, radius, np.zeros((1, 2)), 0.9, np.zeros((0, 3)))


def _add_cells(slabs: np.ndarray, feet: list, cells: list, style: VolumeStyle, z: np.ndarray,
               compaction: float, weight: float = 1.0) -> None:
    """Optical path difference of every cell's cross-section in every slab (in place)."""
    dz = z[1] - z[0]
    for fp, cell in zip(feet, cells):
        if fp is None:
            continue
        r0, r1, c0, c1 = fp.box
        for k, zk in enumerate(z):
            h = (zk - fp.z) / fp.half_thick
            if abs(h) >= 1:
                continue
            edge = np.sqrt(1 - h * h)  # cross-section radius relative to the footprint
            inside = np.clip((edge - fp.rho) * 20, 0, 1)  # soft edge, ~1/20 of the radius
            ring = np.exp(-(((fp.rho - edge) * 30) ** 2)) * (1 - compaction)
            slabs[k, r0:r1, c0:c1] += weight * dz * (style.cell_dn * inside + style.membrane_dn * ring)


def _add_points(slabs: np.ndarray, cells: list, style: VolumeStyle, z: np.ndarray, centre_px, rng) -> None:
    """Granules and nuclei: 3-D points and spheres splatted into their slabs."""
    s, dz = style.size, z[1] - z[0]
    for cell in cells:
        pts = cell.center + cell.granules * cell.radius * np.array([1, 1, cell.z_ratio])
        _splat(slabs, pts, np.full(len(pts), style.granule_dn * dz * 0.2), style, z, centre_px)
        for off, frac in cell.nuclei:
            ctr = cell.center + off * cell.radius
            rad = frac * cell.radius
            ang = rng.uniform(0, 2 * np.pi, 60)
            rim = ctr + np.stack([np.sin(ang), np.cos(ang), np.zeros_like(ang)], 1) * rad
            _splat(slabs, rim, np.full(len(rim), 0.05 * dz), style, z, centre_px)  # nuclear envelope
            _disc(slabs, ctr, rad, style.nucleus_dn * dz, style, z, centre_px)
            _splat(slabs, ctr[None] + rng.normal(0, rad * 0.3, (2, 3)), np.full(2, 0.4 * dz), style, z, centre_px)
    del s


def _splat(slabs, pts, weights, style: VolumeStyle, z, centre_px) -> None:
    rows = centre_px[0] + pts[:, 1] / style.um_per_px
    cols = centre_px[1] + pts[:, 0] / style.um_per_px
    k = np.clip(np.round((pts[:, 2] - z[0]) / (z[1] - z[0])).astype(int), 0, len(z) - 1)
    ok = (rows >= 0) & (rows < style.size - 1) & (cols >= 0) & (cols < style.size - 1)
    np.add.at(slabs, (k[ok], rows[ok].astype(int), cols[ok].astype(int)), weights[ok] / max(style.um_per_px, 0.2))


def _disc(slabs, ctr, rad, value, style: VolumeStyle, z, centre_px) -> None:
    k = int(np.clip(round((ctr[2] - z[0]) / (z[1] - z[0])), 0, len(z) - 1))
    cy = centre_px[0] + ctr[1] / style.um_per_px
    cx = centre_px[1] + ctr[0] / style.um_per_px
    rp = rad / style.um_per_px
    r0, r1 = int(max(cy - rp - 1, 0)), int(min(cy + rp + 2, style.size))
    c0, c1 = int(max(cx - rp - 1, 0)), int(min(cx + rp + 2, style.size))
    if r1 > r0 and c1 > c0:
        yy, xx = np.mgrid[r0:r1, c0:c1]
        slabs[k, r0:r1, c0:c1] += value * np.clip(rp - np.hypot(yy - cy, xx - cx), 0, 1)


def _add_zona(slabs, style: VolumeStyle, z, centre_px, texture) -> None:
    """A spherical shell: in each slab an annulus between the shell's cross-sections."""
    dz = z[1] - z[0]
    rr = np.hypot(*(np.indices((style.size, style.size)) - centre_px[:, None, None])) * style.um_per_px
    r_in, r_out = style.zona_inner_um, style.zona_inner_um + style.zona_um
    for k, zk in enumerate(z):
        a = np.sqrt(max(r_in**2 - zk**2, 0.0))
        b = np.sqrt(max(r_out**2 - zk**2, 0.0))
        if b <= 0:
            continue
        shell = np.clip((rr - a) * 1.5, 0, 1) * np.clip((b - rr) * 1.5, 0, 1)
        slabs[k] += dz * style.zona_dn * shell * texture


def _zona_texture(style: VolumeStyle, centre_px, rng) -> np.ndarray:
    """Radial fibres and concentric layers of the zona, as a relative amplitude around 1."""
    yy, xx = np.indices((style.size, style.size)) - centre_px[:, None, None]
    ang, rad = np.arctan2(yy, xx), np.hypot(yy, xx) * style.um_per_px
    t = np.ones_like(ang)
    for _ in range(4):  # a few broad fibre bundles, not a comb
        t += rng.uniform(0.01, 0.05) * np.cos(rng.integers(6, 30) * ang + rng.uniform(0, 6.3))
    t += rng.uniform(0.05, 0.2) * np.cos(rad * rng.uniform(0.5, 1.5))
    grain = ndi.gaussian_filter(rng.normal(0, 1, ang.shape), rng.uniform(1.0, 3.0))
    return t + rng.uniform(0.5, 2.0) * grain


def _focus(slabs: np.ndarray, z: np.ndarray, focus_um: float, style: VolumeStyle) -> np.ndarray:
    """Sum of the slabs, each blurred by its distance from the focal plane -> (Y, X) phase."""
    out = np.zeros(slabs.shape[1:], np.float32)
    for k, zk in enumerate(z):
        if not slabs[k].any():
            continue
        sigma = 0.6 + abs(zk - focus_um) * style.defocus_px_per_um / max(style.um_per_px / 0.45, 0.3)
        out += ndi.gaussian_filter(slabs[k], sigma, truncate=3.0)
    return out


def _microscope(phase: np.ndarray, style: VolumeStyle) -> np.ndarray:
    """Phase (rad) -> relative intensity (background ~ 1)."""
    phase = phase * style.gain
    if style.microscope == "dic":
        sy, sx = np.sin(style.shear_angle), np.cos(style.shear_angle)
        d = style.shear_px * (sy * ndi.sobel(phase, 0) + sx * ndi.sobel(phase, 1)) / 8
        return (1 - np.cos(d + style.bias)) / (1 - np.cos(style.bias))
    if style.microscope == "phase":
        field = np.exp(1j * phase)
        low = ndi.gaussian_filter(field.real, style.halo_px) + 1j * ndi.gaussian_filter(field.imag, style.halo_px)
        e = field + (style.phase_ring * 1j - 1) * low * 0.5
        e0 = 1 + (style.phase_ring * 1j - 1) * 0.5
        return np.abs(e) ** 2 / abs(e0) ** 2
    lap = ndi.laplace(ndi.gaussian_filter(phase, 1.0))
    return np.clip(1 - style.defocus_gain * lap - style.absorption * phase, 0, None)


def _illumination(style: VolumeStyle, rng) -> np.ndarray:
    y, x = (np.indices((style.size, style.size)) / style.size - 0.5) * 2
    a = style.illum_poly
    field = 1 + a[0] * x + a[1] * y + a[2] * x * y + a[3] * x * x + a[4] * y * y
    for _ in range(style.dust_rings):  # out-of-focus dust on the optics
        cy, cx, r = rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.04, 0.15)
        d = np.hypot(y - cy, x - cx)
        field *= 1 - rng.uniform(0.01, 0.05) * np.exp(-(((d - r) / (r * 0.25)) ** 2))
    return np.clip(field, 0.3, None).astype(np.float32)


def _camera(intensity: np.ndarray, style: VolumeStyle, rng) -> np.ndarray:
    """Relative intensity -> integer counts of the style's bit depth (Poisson + read noise)."""
    full = 255 if style.bit_depth == 8 else (2**style.bit_depth - 1)
    photons = rng.poisson(np.clip(intensity, 0, 8) * style.photons) / style.photons
    counts = photons * style.level * full + rng.normal(0, style.read_noise * full / 255, intensity.shape)
    counts += full * 0.02  # camera offset
    dtype = np.uint8 if style.bit_depth == 8 else np.uint16
    return np.clip(np.round(counts), 0, full).astype(dtype)


# ---------------------------------------------------------------------------
# frames and sequences


def _ground_truth(feet: list, cells: list, style: VolumeStyle, file_name: str, t: int,
                  state: str) -> FrameInstances:
    s = style.size
    if state != "cells":
        return FrameInstances.empty((s, s), file_name=file_name, frame=t, meta={"state": state})
    masks, front, tracks, parents = [], [], [], []
    for fp, cell in zip(feet, cells):
        if fp is None:
            continue
        m = np.zeros((s, s), bool)
        r0, r1, c0, c1 = fp.box
        inside = fp.rho <= 1
        if inside.sum() < 20:  # a sliver at the frame edge: not a cell anyone could annotate
            continue
        m[r0:r1, c0:c1] = inside
        f = np.full((s, s), np.inf, np.float32)
        f[r0:r1, c0:c1] = np.where(inside, fp.z - fp.half_thick * np.sqrt(np.clip(1 - fp.rho**2, 0, 1)), np.inf)
        masks.append(m), front.append(f), tracks.append(cell.track), parents.append(cell.parent)
    if not masks:
        return FrameInstances.empty((s, s), file_name=file_name, frame=t, meta={"state": "cells"})
    front = np.stack(front)
    nearest = np.argmin(front, 0)
    visible = np.stack([(nearest == i) & masks[i] for i in range(len(masks))])
    return FrameInstances.from_masks(np.stack(masks), track_ids=tracks, parent_ids=parents, visible=visible,
                                     file_name=file_name, frame=t, meta={"state": "cells"})


def _render(lineage: _Lineage, style: VolumeStyle, focus_um: float, compaction: float, zona_tex, illum, rng):
    """One frame: image (Y, X) counts, footprints of the cells."""
    s = style.size
    centre = np.array(style.center_frac) * s
    z = _slab_depths(style)
    slabs = np.zeros((len(z), s, s), np.float32)
    feet = []
    if not style.empty:
        cells = lineage.cells
        feet = [_footprint(c, _neighbours(cells, i) if compaction < 0.5 else [], style, centre)
                for i, c in enumerate(cells)]
        _add_cells(slabs, feet, cells, style, z, compaction)
        if compaction > 0:  # compaction: the cells' outlines fade into one smooth ball
            slabs *= 1 - compaction
            ball = _compact_ball(cells)
            _add_cells(slabs, [_footprint(ball, [], style, centre)], [ball], style, z, 0.0, weight=compaction)
        others = lineage.others
        _add_cells(slabs, [_footprint(o, [], style, centre) for o in others], others, style, z, 0.0)
        _add_points(slabs, cells, style, z, centre, rng)
        _add_zona(slabs, style, z, centre, zona_tex)
    image = _microscope(_focus(slabs, z, focus_um, style), style)
    image = image * illum + _debris(style, rng)
    return _camera(image, style, rng), feet


def _debris(style: VolumeStyle, rng) -> np.ndarray:
    out = np.zeros((style.size, style.size), np.float32)
    n = style.debris
    rows, cols = rng.integers(0, style.size, n), rng.integers(0, style.size, n)
    out[rows, cols] = rng.normal(0, 3, n)
    return ndi.gaussian_filter(out, rng.uniform(0.8, 2.5))


def render_volume_sequence(
    seed,
    n_frames: int = 30,
    start_cells: int = 1,
    end_cells: int = 8,
    n_planes: int = 1,
    size: int | None = None,
    file_name: str = "",
    style: VolumeStyle | None = None,
) -> tuple[np.ndarray, list[FrameInstances]]:
    """Render one time-lapse of the volume family and its amodal ground truth.

    Args:
        seed: anything ``np.random.default_rng`` accepts; the whole sequence follows from it.
        n_frames: time points T; cell counts rise from ``start_cells`` to
            ``end_cells`` (1 <= start <= end <= 16) at random frames; a style with
            ``compacts`` spends its last quarter compacting.
        n_planes: focal planes Z (about 12 um apart, the middle one in focus).
        size: frame side in px (default: the style's, random 256..1024).
    Returns:
        images: (T, Y, X) or (T, Z, Y, X), uint8 or uint16 (12- or 16-bit).
        frames: one :class:`FrameInstances` per time point, ``meta["state"]`` set.
    """
    if not 1 <= start_cells <= end_cells <= MAX_CELLS:
        raise ValueError(f"need 1 <= start_cells <= end_cells <= {MAX_CELLS}, got {start_cells}, {end_cells}")
    rng = np.random.default_rng(seed)
    style = style or VolumeStyle.sample(rng, size)
    lineage = _Lineage(style, rng)
    for _ in range(start_cells - 1):
        lineage.divide()
        lineage.settle()
    cuts = np.sort(rng.choice(np.arange(1, max(n_frames, 2)), size=end_cells - start_cells, replace=True))
    centre = np.array(style.center_frac) * style.size
    zona_tex = _zona_texture(style, centre, rng)
    illum = _illumination(style, rng)
    compact_from = int(n_frames * 0.75) if style.compacts else n_frames
    focus, images, frames, pending = style.focus_um, [], [], 0
    for t in range(n_frames):
        pending += int((cuts == t).sum())
        born: set[int] = set()  # a cell divides at most once between two frames
        while pending and lineage.divide(born):
            pending -= 1
        lineage.settle(), lineage.jiggle(), lineage.settle(10)
        focus += rng.normal(0, style.focus_walk_um)
        compaction = 0.0 if t < compact_from else min(1.0, 0.4 + (t - compact_from + 1) / max(n_frames - compact_from, 1))
        planes = []
        for p in range(n_planes):
            f = focus + (p - n_planes // 2) * 12.0
            if rng.random() < style.focus_jump_p:
                f += rng.choice([-1, 1]) * rng.uniform(25, 45)
            image, feet = _render(lineage, style, f, compaction, zona_tex, illum, rng)
            planes.append(image)
        state = "empty" if style.empty else ("compacted" if compaction >= 0.6 else "cells")
        images.append(planes[0] if n_planes == 1 else np.stack(planes))
        frames.append(_ground_truth(feet, lineage.cells, style, file_name, t, state))
    return np.stack(images), frames


def write_volume_dataset(
    out_dir,
    n_sequences: int,
    n_frames: int = 30,
    seed: int = 0,
    size: int | None = None,
    n_planes: int = 1,
    start_cells: int | None = None,
    end_cells: int | None = None,
    json_name: str = "annotations.json",
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Write ``out_dir/volume_{i:04d}.tif`` per sequence and one COCO-amodal JSON.

    Sequence ``i`` uses ``np.random.SeedSequence([seed, i])``. When
    ``start_cells``/``end_cells`` are None each sequence draws its own stage
    range (zygote to 16 cells). Each image entry carries ``state``
    (:data:`FRAME_STATES`). Returns the JSON path.
    """
    import tifffile

    from .coco import write_coco
    from .embryo import EMBRYO_CATEGORIES

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    states: dict[tuple[str, int], dict] = {}

    def frames() -> Iterator[FrameInstances]:
        for i in range(n_sequences):
            name = f"volume_{i:04d}.tif"
            ss = np.random.SeedSequence([seed, i])
            lo, hi = _stage_range(np.random.default_rng(ss.spawn(1)[0]), start_cells, end_cells)
            images, insts = render_volume_sequence(ss, n_frames, lo, hi, n_planes, size, name)
            axes = "TZYX" if n_planes > 1 else "TYX"
            tifffile.imwrite(out_dir / name, images, compression="zlib", metadata={"axes": axes})
            for f in insts:
                states[(name, f.frame)] = {"state": f.meta["state"]}
                f.meta = {}
                yield f
            if progress is not None:
                progress(i + 1, n_sequences)

    json_path = out_dir / json_name
    # streamed: each frame's state is recorded just before the frame is written
    write_coco(json_path, frames(), EMBRYO_CATEGORIES, images_extra=states, predictions=False,
               info={"generator": "embryo_volume", "seed": seed, "n_planes": n_planes})
    return json_path


def _stage_range(rng: np.random.Generator, start: int | None, end: int | None) -> tuple[int, int]:
    """A time-lapse's first and last cell count: the whole of development is covered."""
    if start is None:
        start = int(rng.choice([1, 1, 2, 2, 3, 4, 4, 6, 8, 10]))
    if end is None:
        end = int(min(MAX_CELLS, start + rng.choice([0, 1, 2, 3, 4, 6, 8])))
    return start, max(start, end)
