"""Corrections that propagate: one fix in one frame, offered for the neighbouring frames.

Every correction a user makes in frame ``t`` is one :class:`Edit`: some cells were removed
and some masks added. Deleting a cell removes one and adds nothing; redrawing it removes the
old outline and adds the new one; drawing a missed cell adds one; splitting removes one and
adds two; merging removes two and adds one.

:func:`offer` carries the same edit along the time-lapse, frame after frame, for as long as
it still applies. The edit's masks follow the cells' motion in the image (phase correlation
of the image patch around them, frame to frame). In each frame the removed cells are found
again among the model's cells by overlap (IoU >= 0.5 with where they moved; not by track
id: the mistakes this fixes are often the ones that break tracks), and the model's own
drawing of a cell the edit adds is replaced too, unless it is much like the user's (IoU >=
0.9): then it stays and is what is carried on. The edit stops where a cell it deletes is no
longer there, where a cell it adds has divided, or after ``MAX_FRAMES``. The user accepts or
rejects the whole :class:`Offer` with one key, or accepts it up to the frame where it goes
wrong (:meth:`Offer.up_to`); :func:`apply_offer` carries it out.

Frames are :class:`~napari_amodal.instances.FrameInstances` indexed by frame number;
images are (T, Y, X) arrays of any dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .instances import FrameInstances, instance_overlaps

SAME_CELL_IOU = 0.5  # a model cell this close to where a corrected cell moved is that cell
AGREES_IOU = 0.9  # a model cell this close to an added one is drawn as the user would (chosen on validation)
MOTION_GAIN = 0.8  # a motion is believed when it explains the image 20 % better than none (pure noise: up to 15 %)
MAX_FRAMES = 60  # an edit is carried at most this many frames


@dataclass(frozen=True)
class Edit:
    """A correction in frame ``frame``: the cells ``removed`` (K, Y, X) bool gave way to the
    ``added`` masks (M, Y, X) bool, which take the track ids ``added_ids``."""

    frame: int
    removed: np.ndarray
    added: np.ndarray
    added_ids: tuple[int, ...] = ()

    def __post_init__(self):
        if self.removed.ndim != 3 or self.added.ndim != 3 or self.removed.shape[1:] != self.added.shape[1:]:
            raise ValueError(f"removed {self.removed.shape} and added {self.added.shape} must be (N, Y, X) of one frame")
        if len(self.added) != len(self.added_ids):
            raise ValueError(f"{len(self.added)} added masks but {len(self.added_ids)} ids")
        if not len(self.removed) and not len(self.added):
            raise ValueError("an edit removes or adds at least one cell")


@dataclass
class Offer:
    """The edit carried to ``frames`` (in order, moving away from the edited frame): in frame
    ``t`` the cells ``remove[t]`` (indices into that frame) go and ``masks[t]`` (M, Y, X) come,
    with track ids ``ids[t]`` (M,)."""

    edit: Edit
    frames: list[int] = field(default_factory=list)
    remove: dict[int, np.ndarray] = field(default_factory=dict)
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    ids: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    def up_to(self, n: int) -> "Offer":
        """The offer for its first ``n`` frames only."""
        kept = self.frames[:n]
        return Offer(self.edit, kept, {t: self.remove[t] for t in kept}, {t: self.masks[t] for t in kept},
                     {t: self.ids[t] for t in kept})


def offer(frames: Sequence[FrameInstances], images, edit: Edit, direction: int = 1,
          max_frames: int = MAX_FRAMES) -> Offer:
    """The frames after (``direction`` 1) or before (-1) ``edit.frame`` where the same edit applies.

    ``frames``: the time-lapse (``frames[t]`` is frame t; the edited frame may be as it was
    before the edit or after it). ``images``: (T, Y, X) the image stack the edit's masks follow.
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be 1 or -1, got {direction}")
    result = Offer(edit)
    removed, added, previous = edit.removed, edit.added, edit.frame
    kept = _untouched(frames[edit.frame], np.concatenate([removed, added]))
    stop = len(frames) if direction > 0 else -1
    for t in range(edit.frame + direction, stop, direction):
        if len(result) >= max_frames:
            break
        region = np.concatenate([removed, added]).any(0)
        shift = _shift(images, previous, t, region)
        removed, added = _shift_masks(removed, shift), _shift_masks(added, shift)
        step = _carry_into(frames[t], removed, added, kept)
        if step is None:
            break
        remove, drawn, added = step
        result.frames.append(t)
        result.remove[t], result.masks[t] = remove, added[drawn]
        result.ids[t] = np.asarray(edit.added_ids, np.int64)[drawn]
        if len(removed) and not len(added):  # follow the cells to delete as the model now draws them
            removed = frames[t].masks[remove]
        kept = np.delete(frames[t].masks, remove, axis=0)
        previous = t
    while result.frames and not len(result.remove[result.frames[-1]]) and not len(result.masks[result.frames[-1]]):
        t = result.frames.pop()  # frames at the end where the edit changes nothing are not offered
        del result.remove[t], result.masks[t], result.ids[t]
    return result


def apply_offer(frames: Sequence[FrameInstances], accepted: Offer) -> list[FrameInstances]:
    """``frames`` with the offer carried out (new FrameInstances for the frames it covers)."""
    out = list(frames)
    for t in accepted.frames:
        f = frames[t]
        keep = np.ones(len(f), bool)
        keep[accepted.remove[t]] = False
        kept, new = f.select(keep), accepted.masks[t]
        out[t] = FrameInstances.from_masks(
            np.concatenate([kept.masks, new]), shape=f.shape,
            scores=np.concatenate([kept.scores, np.ones(len(new), np.float32)]),
            labels=np.concatenate([kept.labels, np.ones(len(new), np.int64)]),
            track_ids=np.concatenate([kept.track_ids, accepted.ids[t]]),
            parent_ids=np.concatenate([kept.parent_ids, np.full(len(new), -1, np.int64)]),
            occlusion=f.occlusion, file_name=f.file_name, frame=f.frame, meta=dict(f.meta))
    return out


def _untouched(frame: FrameInstances, edited: np.ndarray) -> np.ndarray:
    """(K, Y, X) the cells of the edited ``frame`` the edit left alone (those not drawn much
    like one of its removed or added masks, ``edited``)."""
    if not len(frame) or not len(edited):
        return frame.masks
    iou, _ = instance_overlaps(frame, FrameInstances.from_masks(edited, shape=frame.shape))
    return frame.masks[iou.max(1) < AGREES_IOU]


def _carry_into(frame: FrameInstances, removed: np.ndarray, added: np.ndarray, kept: np.ndarray):
    """The edit in one more frame: ``(remove, drawn, added)`` -- the indices of ``frame``'s
    cells it removes, which of the added cells (M,) bool it draws there and the added cells'
    masks (M, Y, X) to carry on -- or None where it no longer applies.

    The edit's ``removed`` cells (where they moved) and the cells the user left alone in the
    frame before, ``kept``, are found again among ``frame``'s cells together (one to one,
    IoU >= 0.5): the removed ones go (a cell to delete that is gone ends the edit), the kept
    ones stay whatever the edit adds. The model's other drawings of a cell the edit adds (IoU
    >= 0.5 with an added mask) go too, unless one is much like the user's (IoU >= 0.9): then it
    stays and is what is carried on, the outline re-fitted to the image. An added cell that now
    holds two of the model's cells (each half inside it or more) has divided: the edit ends.
    """
    from scipy.optimize import linear_sum_assignment

    shape = frame.shape
    hits = np.full(len(removed), -1, np.int64)
    protected = np.zeros(0, np.int64)
    reference = np.concatenate([removed, kept])
    if len(reference) and len(frame):
        iou, _ = instance_overlaps(FrameInstances.from_masks(reference, shape=shape), frame)
        rows, cols = linear_sum_assignment(-iou)
        good = iou[rows, cols] >= SAME_CELL_IOU
        rows, cols = rows[good], cols[good]
        mine = rows < len(removed)
        hits[rows[mine]] = cols[mine]
        protected = cols[~mine]
    if (hits < 0).any() and not len(added):
        return None  # a cell to delete is gone
    remove, drawn = hits[hits >= 0], np.ones(len(added), bool)
    if len(added) and len(frame):
        iou, inter = instance_overlaps(FrameInstances.from_masks(added, shape=shape), frame)
        inside = inter / np.maximum(frame.areas, 1)[None, :]
        if ((inside >= 0.5) & (iou < SAME_CELL_IOU)).sum(1).max() >= 2:
            return None  # an added cell has divided
        best = iou.argmax(1)
        agrees = iou[np.arange(len(added)), best] >= AGREES_IOU
        added = np.where(agrees[:, None, None], frame.masks[best], added)
        drawn = ~agrees
        redrawn = np.setdiff1d(np.flatnonzero((iou[drawn] >= SAME_CELL_IOU).any(0)), protected)
        remove = np.setdiff1d(np.union1d(remove, redrawn), best[agrees])
    return remove.astype(np.int64), drawn, added


def _shift(images, t_from: int, t_to: int, region: np.ndarray) -> tuple[int, int]:
    """Whole-pixel motion (dy, dx) of the image around ``region`` (Y, X) bool from one frame to another."""
    from skimage.registration import phase_cross_correlation

    ys, xs = np.nonzero(region)
    if not len(ys):
        return 0, 0
    h, w = region.shape
    pad = max(8, int(0.25 * max(ys.max() - ys.min(), xs.max() - xs.min())))
    sl = (slice(max(ys.min() - pad, 0), min(ys.max() + pad + 1, h)), slice(max(xs.min() - pad, 0), min(xs.max() + pad + 1, w)))
    a, b = _grey(images[t_from])[sl], _grey(images[t_to])[sl]
    if a.std() == 0 or b.std() == 0:
        return 0, 0
    shift, _, _ = phase_cross_correlation(b, a, normalization=None)
    dy, dx = (int(round(v)) for v in shift)
    if max(abs(dy), abs(dx)) > pad:  # the correlation locked onto another cell
        return 0, 0
    # where the patch holds nothing that moves (a cell the model invented), the peak is noise
    return (dy, dx) if _misfit(a, b, (dy, dx)) < MOTION_GAIN * _misfit(a, b, (0, 0)) else (0, 0)


def _grey(image) -> np.ndarray:
    """(Y, X) float32 of a grey (Y, X) or RGB(A) (Y, X, S) frame."""
    image = np.asarray(image, np.float32)
    return image.mean(-1) if image.ndim == 3 else image


def _misfit(a: np.ndarray, b: np.ndarray, shift: tuple[int, int]) -> float:
    """Mean squared difference of ``b`` and ``a`` moved by ``shift`` (dy, dx), where they overlap."""
    dy, dx = shift
    h, w = a.shape
    a_part = a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    b_part = b[max(dy, 0):h - max(-dy, 0), max(dx, 0):w - max(-dx, 0)]
    return float(np.mean((b_part - a_part) ** 2)) if a_part.size else np.inf


def _shift_masks(masks: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """(N, Y, X) masks each moved by whole pixels (dy, dx)."""
    return np.stack([_shift_mask(m, shift) for m in masks]) if len(masks) and shift != (0, 0) else masks


def _shift_mask(mask: np.ndarray, shift: tuple[int, int]) -> np.ndarray:
    """``mask`` (Y, X) moved by whole pixels (dy, dx); what leaves the frame is lost."""
    dy, dx = shift
    out = np.zeros_like(mask)
    h, w = mask.shape
    src = mask[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    out[max(dy, 0):max(dy, 0) + src.shape[0], max(dx, 0):max(dx, 0) + src.shape[1]] = src
    return out
