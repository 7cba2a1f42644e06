"""The bundled sample data: a small embryo time-lapse and a small shapes set.

Both are made from fixed seeds by :func:`write_sample_data` (run
``python docs/scripts/make_sample_data.py``) and shipped inside the package, so
the demo and the napari sample-data menu work offline on a fresh install.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"

EMBRYO_STACK = "embryo_sample.tif"
EMBRYO_GT = "embryo_sample.json"
SHAPES_STACK = "shapes_sample.tif"
SHAPES_GT = "shapes_sample.json"

EMBRYO_SEED = 20261125
SHAPES_SEED = 224


def sample_path(name: str) -> Path:
    """Path of a bundled sample file; a clear error if the install lacks it."""
    p = SAMPLE_DIR / name
    if not p.exists():
        raise FileNotFoundError(
            f"bundled sample file {name} is missing from {SAMPLE_DIR}; reinstall napari-amodal "
            "or regenerate it with docs/scripts/make_sample_data.py"
        )
    return p


def write_sample_data(out_dir=SAMPLE_DIR, n_frames: int = 20, n_shapes: int = 12) -> list[Path]:
    """Render the sample data from fixed seeds into ``out_dir``; returns the files."""
    import tifffile

    from .coco import write_coco
    from .embryo import EMBRYO_CATEGORIES, render_sequence
    from .shapes import SHAPE_CATEGORIES, render_shapes_image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    images, frames = render_sequence(
        EMBRYO_SEED, n_frames=n_frames, size=500, start_cells=2, end_cells=8, file_name=EMBRYO_STACK
    )
    tifffile.imwrite(out_dir / EMBRYO_STACK, images, compression="zlib", metadata={"axes": "TYX"})
    write_coco(out_dir / EMBRYO_GT, frames, EMBRYO_CATEGORIES, info={"generator": "embryo", "seed": EMBRYO_SEED})

    rng = np.random.default_rng(SHAPES_SEED)
    stack, shape_frames = [], []
    for i in range(n_shapes):
        image, inst = render_shapes_image(rng)
        inst.file_name, inst.frame = SHAPES_STACK, i
        stack.append(image)
        shape_frames.append(inst)
    tifffile.imwrite(out_dir / SHAPES_STACK, np.stack(stack), compression="zlib", metadata={"axes": "TYXS"})
    write_coco(out_dir / SHAPES_GT, shape_frames, SHAPE_CATEGORIES, info={"generator": "shapes", "seed": SHAPES_SEED})
    return [out_dir / n for n in (EMBRYO_STACK, EMBRYO_GT, SHAPES_STACK, SHAPES_GT)]
