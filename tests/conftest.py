"""Shared fixtures: small synthetic frames with known geometry."""

import numpy as np
import pytest

from helpers import disk_mask
from napari_amodal.instances import FrameInstances


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
