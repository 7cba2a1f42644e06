"""Copy a trained detector into the package as the bundled model.

    python recipes/bundled/install.py runs/bundled

Writes src/napari_amodal/models/bundled.safetensors (weights stored as
float16 to stay under the 32 MB budget; they load into float32), its SHA-256 in
bundled.sha256, and the training log beside it as bundled_training_log.jsonl.
"""

import json
import sys
from pathlib import Path


from napari_amodal.models import BUNDLED_DIR
from napari_amodal.train.checkpoint import load_checkpoint, save_checkpoint, sha256


def main(run_dir: str) -> None:
    run = Path(run_dir)
    tensors, config, extra = load_checkpoint(run / "model.safetensors")
    weights = {
        k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items() if not k.startswith("__")
    }
    shape_meta = json.loads((run / "shape.json").read_text()) if (run / "shape.json").exists() else {}
    extra = {
        **extra,
        "stored_dtype": "float16",
        "recipe": "recipes/bundled/train.sh",
        "shape_model_report": shape_meta.get("extra", {}).get("report"),
    }
    BUNDLED_DIR.mkdir(exist_ok=True)
    dest = save_checkpoint(BUNDLED_DIR / "bundled.safetensors", weights, config, extra)
    (BUNDLED_DIR / "bundled.sha256").write_text(f"{sha256(dest)}  bundled.safetensors\n")
    # one line per iteration: a resumed run may have logged a few iterations twice
    rows = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[(row["iteration"], "validation" in row)] = line
    log_lines = [rows[k] for k in sorted(rows)]
    (BUNDLED_DIR / "bundled_training_log.jsonl").write_text("\n".join(log_lines) + "\n")
    print(f"{dest}: {dest.stat().st_size / 1e6:.1f} MB, sha256 {sha256(dest)[:16]}...")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs/bundled")
