"""Copy a trained detector into the package as the bundled model.

    python recipes/bundled/install.py runs/bundled [runs/bundled2 ...]

    python recipes/bundled/install.py --float16 SRC DEST   # only convert a checkpoint

    python recipes/bundled/install.py --as-trained RUN...   # as trained, no inference.json

    python recipes/bundled/install.py --inference FILE RUN...   # with FILE instead of inference.json

    python recipes/bundled/install.py --restamp   # re-apply the recipe's inference settings
                                                  # to the shipped file (weights untouched)

    python recipes/bundled/install.py --append RUN   # ship RUN's model as the next stage,
                                                      # keeping the shipped stages' logs

With several run folders (training stages, each started from the one before),
the model of the last one is shipped and the logs of all are kept. Writes
src/napari_amodal/models/bundled.safetensors (weights stored as float16 to stay
under the 32 MB budget; they load into float32), its SHA-256 in bundled.sha256,
and the training log beside it as bundled_training_log.jsonl (one line per
iteration and validation, with a ``stage`` field: 1, 2, ...).

The shipped config takes the inference-only settings in recipes/bundled/inference.json
(any of ``INFERENCE_FIELDS``: score and NMS thresholds, detections per frame,
proposals at test time, test-time box refinement) over those the checkpoint was
trained with: they change no weight, only how the model is run. They are kept out of
config.json so that training (and its choice of the best checkpoint by validation AP)
stays as it was when the shipped weights were made.
"""

import json
import sys
from pathlib import Path

from napari_amodal.atomic import atomic_write_text
from napari_amodal.models import BUNDLED_DIR
from napari_amodal.checkpoint import load_checkpoint, save_checkpoint, sha256

LIMIT_MB = 32
RECIPE_INFERENCE = Path(__file__).with_name("inference.json")
INFERENCE_FIELDS = (
    "box_score_thresh", "box_nms_thresh", "box_detections_per_img", "box_refine_steps",
    "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "auto_input_size",
)


def with_recipe_inference(config: dict, path: Path = RECIPE_INFERENCE) -> dict:
    """``config`` (a checkpoint's ``{"model": ..., ...}``) with the inference-only fields of ``path``
    (the recipe's inference.json by default)."""
    recipe = json.loads(Path(path).read_text())
    unknown = set(recipe) - set(INFERENCE_FIELDS)
    if unknown:
        raise SystemExit(f"{path}: not inference-only settings: {sorted(unknown)}; nothing installed")
    model = {**config["model"], **recipe}
    return {**config, "model": model}


def ship(weights: dict, config: dict, extra: dict) -> tuple[Path, str]:
    """Write the package's bundled.safetensors and its checksum file; returns (path, sha256)."""
    BUNDLED_DIR.mkdir(exist_ok=True)
    dest = save_checkpoint(BUNDLED_DIR / "bundled.safetensors", weights, config, extra)
    digest = sha256(dest)
    atomic_write_text(BUNDLED_DIR / "bundled.sha256", f"{digest}  bundled.safetensors\n")
    return dest, digest


def stage_log(run: Path, stage: int) -> list[str]:
    """The run's log lines, one per iteration (a resumed run may have logged some twice), tagged with the stage."""
    rows = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[(row["iteration"], "validation" in row)] = json.dumps({"stage": stage, **row})
    return [rows[k] for k in sorted(rows)]


def float16_weights(tensors: dict) -> dict:
    """The checkpoint's weights with floating-point tensors stored as float16."""
    return {k: (v.half() if v.is_floating_point() else v) for k, v in tensors.items() if not k.startswith("__")}


def save_float16(src: str, dest: str) -> None:
    """Write checkpoint ``src`` with float16 weights to ``dest`` (as shipped; nothing installed)."""
    tensors, config, extra = load_checkpoint(src)
    save_checkpoint(dest, float16_weights(tensors), config, {**extra, "stored_dtype": "float16"})


def main(run_dirs: list[str], inference: Path | None = RECIPE_INFERENCE) -> None:
    """Ship the last run's model with the logs of all; ``inference``: the inference-only settings
    to apply (a JSON file), None to keep those it was trained with."""
    runs = [Path(r) for r in run_dirs]
    tensors, config, extra = load_checkpoint(runs[-1] / "model.safetensors")
    if inference is not None:
        config = with_recipe_inference(config, inference)
    weights = float16_weights(tensors)
    shape_json = next((r / "shape.json" for r in runs if (r / "shape.json").exists()), None)
    shape_meta = json.loads(shape_json.read_text()) if shape_json else {}
    extra = {
        **extra,
        "stored_dtype": "float16",
        "recipe": "recipes/bundled/train.sh",
        "stages": [str(r) for r in runs],
        "shape_model_report": shape_meta.get("extra", {}).get("report"),
    }
    # checked before anything in the package is replaced (the tensor bytes are nearly the whole file)
    tensor_mb = sum(v.numel() * v.element_size() for v in weights.values()) / 2**20
    if tensor_mb > LIMIT_MB:
        raise SystemExit(f"the weights take {tensor_mb:.1f} MiB, over the {LIMIT_MB} MiB budget: nothing installed")
    log_lines = [line for stage, run in enumerate(runs, 1) for line in stage_log(run, stage)]
    dest, digest = ship(weights, config, extra)
    atomic_write_text(BUNDLED_DIR / "bundled_training_log.jsonl", "\n".join(log_lines) + "\n")
    print(f"{dest}: {dest.stat().st_size / 2**20:.1f} MiB, sha256 {digest[:16]}...")


def append_stage(run_dir: str, inference: Path = RECIPE_INFERENCE) -> None:
    """Ship ``run_dir``'s model as the next stage after the shipped ones: their logs (in
    the package) are kept and this run's log is added with the next stage number."""
    run = Path(run_dir)
    tensors, config, extra = load_checkpoint(run / "model.safetensors")
    config = with_recipe_inference(config, inference)
    weights = float16_weights(tensors)
    shipped = BUNDLED_DIR / "bundled_training_log.jsonl"
    old_lines = [line for line in shipped.read_text().splitlines() if line.strip()] if shipped.exists() else []
    stage = max((json.loads(line).get("stage", 1) for line in old_lines), default=0) + 1
    _, _, old_extra = load_checkpoint(BUNDLED_DIR / "bundled.safetensors")
    extra = {**extra, "stored_dtype": "float16", "recipe": "recipes/bundled/train.sh",
             "stages": list(old_extra.get("stages", [])) + [str(run)],
             "shape_model_report": old_extra.get("shape_model_report")}
    tensor_mb = sum(v.numel() * v.element_size() for v in weights.values()) / 2**20
    if tensor_mb > LIMIT_MB:
        raise SystemExit(f"the weights take {tensor_mb:.1f} MiB, over the {LIMIT_MB} MiB budget: nothing installed")
    dest, digest = ship(weights, config, extra)
    atomic_write_text(shipped, "\n".join(old_lines + stage_log(run, stage)) + "\n")
    print(f"{dest}: stage {stage}, {dest.stat().st_size / 2**20:.1f} MiB, sha256 {digest[:16]}...")


def restamp() -> None:
    """Rewrite the shipped model with the recipe's inference settings; weights and log unchanged."""
    path = BUNDLED_DIR / "bundled.safetensors"
    tensors, config, extra = load_checkpoint(path)
    new = with_recipe_inference(config)
    changed = {k: (config["model"].get(k), v) for k, v in new["model"].items() if config["model"].get(k) != v}
    if not changed:
        print(f"{path}: already has the recipe's inference settings")
        return
    dest, digest = ship(tensors, new, extra)
    print(f"{dest}: inference settings {changed} (old -> new), sha256 {digest[:16]}...")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--float16"]:  # install.py --float16 SRC DEST
        save_float16(*sys.argv[2:4])
    elif sys.argv[1:2] == ["--append"]:  # install.py --append RUN
        append_stage(sys.argv[2])
    elif sys.argv[1:] == ["--restamp"]:
        restamp()
    elif sys.argv[1:2] == ["--as-trained"]:  # an intermediate stage: no inference settings applied
        main(sys.argv[2:] or ["runs/bundled"], inference=None)
    elif sys.argv[1:2] == ["--inference"]:  # install.py --inference FILE RUN...
        main(sys.argv[3:] or ["runs/bundled"], inference=Path(sys.argv[2]))
    else:
        main(sys.argv[1:] or ["runs/bundled"])
