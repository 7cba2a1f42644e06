"""napari-amodal: amodal instance segmentation of overlapping cells.

Importing this package is cheap: it pulls in neither torch nor Qt. The heavy
parts live in submodules (``napari_amodal.model``, ``napari_amodal._napari``)
that are imported when used.
"""

__version__ = "0.1.0"

from .instances import FrameInstances  # noqa: E402  (numpy only)

__all__ = ["FrameInstances", "__version__"]
