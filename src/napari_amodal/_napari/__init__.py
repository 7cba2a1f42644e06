"""napari integration: reader, writer, sample data, widgets. The only code that touches napari/Qt.

torch's CUDA builds bring triton, whose LLVM clashes with Mesa's software OpenGL
(llvmpipe: virtual machines, remote desktops, Xvfb): importing torch after
napari's canvas exists crashed the process. napari-amodal never uses
torch.compile, so unless torch is already loaded (or NAPARI_AMODAL_ALLOW_TRITON=1)
triton is kept out of the napari process.
"""

import os
import sys

if "torch" not in sys.modules and "triton" not in sys.modules and os.environ.get("NAPARI_AMODAL_ALLOW_TRITON") != "1":
    sys.modules["triton"] = None  # import triton -> ImportError; torch then runs without it
