"""Shared fixtures: small synthetic frames with known geometry."""

import numpy as np
import pytest
from skimage.draw import disk, ellipse

from napari_amodal.instances import FrameInstances


def disk_mask(shape, center, radius):
    m = np.zeros(shape, bool)
    rr, cc = disk(center, radius, shape=shape)
    m[rr, cc] = True
    return m


def ellipse_mask(shape, center, radii, rotation=0.0):
    m = np.zeros(shape, bool)
    rr, cc = ellipse(center[0], center[1], radii[0], radii[1], shape=shape, rotation=rotation)
    m[rr, cc] = True
    return m


@pytest.fixture
def two_cells():
    """Two overlapping disks of radius 20 in a 100x120 frame, plus one apart."""
    shape = (100, 120)
    masks = np.stack(
        [disk_mask(shape, (50, 40), 20), disk_mask(shape, (50, 70), 20), disk_mask(shape, (15, 105), 8)]
    )
    return FrameInstances.from_masks(
        masks, scores=[0.9, 0.8, 0.7], labels=[1, 1, 1], track_ids=[1, 2, 3], file_name="a.tif", frame=3
    )
