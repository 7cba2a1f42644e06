"""Mask drawing helpers shared by tests (a plain module: two conftest.py files
exist, so ``from conftest import`` would be ambiguous)."""

import numpy as np
from skimage.draw import disk, ellipse


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
