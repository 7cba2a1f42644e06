"""Many stacks on a local Dask cluster: the same files as one process, failures reported."""

import json

import numpy as np
import pytest
import tifffile
import torch
from tiny import save_untrained, tiny_config

from napari_amodal.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    d = tmp_path_factory.mktemp("stacks")
    torch.manual_seed(2)
    model = save_untrained(d / "tiny.safetensors", tiny_config().replace(box_score_thresh=0.0))
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b", "c"):
        tifffile.imwrite(d / f"{name}.tif", (rng.random((5, 64, 64)) * 255).astype(np.uint8))
        paths.append(d / f"{name}.tif")
    (d / "broken.tif").write_bytes(b"II*\x00 not really a tiff")
    return model, paths, d / "broken.tif"


def _annotations(path):
    d = json.loads(path.read_text())
    return [(a["image_id"], a["segmentation"]["counts"], a["track_id"], round(a["score"], 4)) for a in d["annotations"]]


def test_workers_write_what_one_process_writes_and_report_a_failing_stack(stacks, tmp_path, capsys):
    model, paths, broken = stacks
    common = ["--model", str(model), "--device", "cpu", "--score-threshold", "0.0"]
    torch.set_num_threads(1)  # the workers' thread count: the same arithmetic
    assert main(["-q", "segment", *map(str, paths), "--out", str(tmp_path / "one"), *common]) == 0
    rc = main(["-q", "segment", *map(str, paths), str(broken), "--out", str(tmp_path / "two"), *common,
               "--workers", "2"])
    captured = capsys.readouterr()
    assert rc == 1
    assert "broken.tif" in captured.err and "1 of 4 stack(s) failed" in captured.err
    for p in paths:
        one, two = tmp_path / "one" / f"{p.stem}.json", tmp_path / "two" / f"{p.stem}.json"
        assert _annotations(two) == _annotations(one) and len(_annotations(one)) > 0
        assert (tmp_path / "two" / f"{p.stem}_occlusion.tif").read_bytes() == \
            (tmp_path / "one" / f"{p.stem}_occlusion.tif").read_bytes()
    assert not (tmp_path / "two" / "broken.json").exists()
    leftovers = [p.name for p in (tmp_path / "two").iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_cluster_options_are_checked_first(stacks, tmp_path, capsys):
    model, paths, _ = stacks
    assert main(["segment", str(paths[0]), "--out", str(tmp_path), "--model", str(model), "--workers", "0"]) == 2
    assert main(["segment", str(tmp_path / "nope.tif"), "--out", str(tmp_path), "--model", str(model),
                 "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert "--workers must be at least 1" in err and "nope.tif" in err
    assert not list(tmp_path.glob("*.json"))
