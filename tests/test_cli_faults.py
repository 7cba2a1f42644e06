"""Bad input and faults against the command line: one line, the right exit status,
earlier files intact byte for byte, no temporary files left behind."""

import errno
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
from tiny import save_untrained

from napari_amodal.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_untrained(tmp_path_factory.mktemp("m") / "tiny.safetensors")


@pytest.fixture
def done(tmp_path, model):
    """A stack segmented once into OUT: the earlier outputs a fault must not touch."""
    stack = (np.random.default_rng(0).random((3, 64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "emb.tif", stack)
    out = tmp_path / "out"
    assert main(["-q", "segment", str(tmp_path / "emb.tif"), "--out", str(out), "--model", str(model),
                 "--device", "cpu"]) == 0
    return tmp_path, out, snapshot(out)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def segment(tmp_path, model, *extra):
    return main(["-q", "segment", str(tmp_path / "emb.tif"), "--out", str(tmp_path / "out"), "--model", str(model),
                 "--device", "cpu", *extra])


@pytest.mark.parametrize("option", [["--batch-size", "-1"], ["--batch-size", "0"], ["--score-threshold", "nan"],
                                    ["--score-threshold", "1.5"], ["--plane", "-2"], ["--device", "cudax"],
                                    ["--channel", "x"]])
def test_bad_options_are_usage_errors_that_write_nothing(done, model, capsys, option):
    tmp_path, out, before = done
    assert segment(tmp_path, model, *option) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "".join(err) and "error" in err[-1]
    assert snapshot(out) == before


def test_bad_values_in_every_command_are_refused(tmp_path, capsys):
    for argv in (["finetune", "--data", "x.json", "--out", str(tmp_path), "--lr", "nan"],
                 ["finetune", "--data", "x.json", "--out", str(tmp_path), "--anchor", "-1"],
                 ["train", "--data", "x.json", "--out", str(tmp_path), "--lr", "inf"],
                 ["train", "--data", "x.json", "--out", str(tmp_path), "--iterations", "0"],
                 ["measure", "x.json", "--out", str(tmp_path), "--um-per-px", "nan"],
                 ["synth", "embryo", str(tmp_path / "s"), "--sequences", "-3"]):
        assert main(argv) == 2, argv
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["segment", "export", "finetune", "train", "measure"])
@pytest.mark.parametrize("where", ["afile", "afile/sub"])
def test_output_folder_that_is_a_file(done, model, capsys, command, where):
    tmp_path, out, before = done
    (tmp_path / "afile").write_text("keep me")
    dest, pred = str(tmp_path / where), str(out / "emb.json")
    args = {"segment": ["segment", str(tmp_path / "emb.tif"), "--model", str(model), "--device", "cpu"],
            "export": ["export", pred], "measure": ["measure", pred],
            "finetune": ["finetune", "--init", str(model), "--data", pred, "--device", "cpu"],
            "train": ["train", "--config", "lean", "--data", pred, "--input-sizes", "64"]}[command]
    rc = main(["-q", *args, "--out", dest])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "Errno" not in err
    assert ("the --out folder is a file" in err) if where == "afile" else ("is a file" in err and "afile" in err)
    assert (tmp_path / "afile").read_text() == "keep me" and snapshot(out) == before


def test_a_damaged_second_input_stops_the_run_before_the_first_is_written(done, model, capsys):
    tmp_path, out, before = done
    (tmp_path / "cut.tif").write_bytes((tmp_path / "emb.tif").read_bytes()[:300])
    tifffile.imwrite(tmp_path / "other.tif", np.zeros((2, 64, 64), np.uint8))
    rc = main(["-q", "segment", str(tmp_path / "other.tif"), str(tmp_path / "cut.tif"), "--out", str(out),
               "--model", str(model), "--device", "cpu"])
    assert rc == 2 and "cut.tif" in capsys.readouterr().err
    assert snapshot(out) == before  # no other.* written


def test_bad_training_options_are_refused_before_anything_is_written(done, capsys):
    tmp_path, out, _ = done
    rc = main(["-q", "train", "--config", "lean", "--data", str(out / "emb.json"), "--out", str(tmp_path / "tr"),
               "--input-sizes", "0"])
    assert rc == 2 and "input sizes must be at least 32 px" in capsys.readouterr().err
    assert not (tmp_path / "tr").exists()  # the shape model was trained first, before


def test_a_folder_given_as_the_model_and_quiet_runs(done, model, capsys):
    tmp_path, out, before = done
    (tmp_path / "mdir").mkdir()
    assert segment(tmp_path, str(tmp_path / "mdir") + "/") == 2
    err = capsys.readouterr().err
    assert "mdir: is a folder, not a .safetensors model file" in err and "No such device" not in err
    assert segment(tmp_path, model) == 0
    assert "on cpu" not in capsys.readouterr().err  # -q: no progress, no line about the model


def test_inputs_that_are_folders_or_damaged(done, model, capsys):
    tmp_path, out, before = done
    (tmp_path / "dir.tif").mkdir()
    raw = (tmp_path / "emb.tif").read_bytes()
    tifffile.imwrite(tmp_path / "z.tif", np.random.default_rng(1).integers(0, 255, (3, 64, 64), np.uint8),
                     compression="zlib")
    (tmp_path / "cut.tif").write_bytes((tmp_path / "z.tif").read_bytes()[:3000])
    for name in ("dir.tif", "cut.tif"):
        rc = main(["-q", "segment", str(tmp_path / name), "--out", str(out), "--model", str(model), "--device", "cpu"])
        err = capsys.readouterr().err
        assert rc == 2 and name in err and "Traceback" not in err
    assert (tmp_path / "emb.tif").read_bytes() == raw and snapshot(out) == before


def test_disk_full_is_a_runtime_error_and_keeps_earlier_outputs(done, model, capsys, monkeypatch):
    from napari_amodal import atomic

    tmp_path, out, before = done

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    assert segment(tmp_path, model) == 1
    assert "no space left" in capsys.readouterr().err
    assert snapshot(out) == before  # nothing replaced, no temporary file left


def test_unexpected_failure_is_one_line_and_verbose_shows_the_traceback(done, model, capsys, monkeypatch):
    from napari_amodal import segment as seg_module

    tmp_path, out, before = done

    def broken(*a, **k):
        raise RuntimeError("expected scalar type Double but found Float")

    monkeypatch.setattr(seg_module, "outputs_to_instances", broken)
    assert segment(tmp_path, model) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "RuntimeError: expected scalar type" in err and "-v" in err
    assert segment(tmp_path, model, "-v") == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "run with -v" not in err  # the hint only where the traceback is not
    assert snapshot(out) == before


@pytest.mark.slow
def test_kill_9_mid_run_leaves_earlier_outputs_and_the_next_run_cleans_up(done, model):
    tmp_path, out, before = done
    long = (np.random.default_rng(3).random((400, 64, 64)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "emb.tif", long)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "napari_amodal.cli", "-q", "segment", str(tmp_path / "emb.tif"),
                             "--out", str(out), "--model", str(model), "--device", "cpu"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.endswith(".tmp") for p in out.iterdir()):
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the stack
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    leftovers = [p for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers  # the killed run's temporary files
    assert {k: v for k, v in snapshot(out).items() if not k.startswith(".")} == before
    tifffile.imwrite(tmp_path / "emb.tif", long[:2])
    assert segment(tmp_path, model) == 0
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # orphans of the dead process removed


def _address_space_after_start(model) -> int:
    """Bytes of address space a fresh process holds once torch and ``model`` are loaded."""
    code = ("import napari_amodal.cli, napari_amodal.write; from napari_amodal.segment import Segmenter; "
            f"Segmenter.load({str(model)!r}, device='cpu'); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmPeak')][0].split()[1])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1]) * 1024


def test_running_out_of_memory_is_one_line_and_keeps_earlier_outputs(done, model):
    """A real failed allocation: the run is given 1.5 GB more than it needs to start, and a
    frame upscaled to 4000 px needs more than that."""
    import resource

    tmp_path, out, before = done
    limit = _address_space_after_start(model) + 1536 * 2**20

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "napari_amodal.cli", "-q", "segment", str(tmp_path / "emb.tif"),
                          "--out", str(out), "--model", str(model), "--device", "cpu", "--input-size", "4000"],
                         env=env, preexec_fn=cap, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1
    errors = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "out of memory" in errors[0] and "Traceback" not in run.stderr
    assert snapshot(out) == before  # nothing replaced, no temporary file left


def test_two_runs_into_one_folder_do_not_interleave(done, model, capsys):
    """While one run writes emb.* (its lock held by a live process), a second is refused;
    a lock left by a dead process is taken over."""
    tmp_path, out, before = done
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".emb.lock").write_text(str(sleeper.pid))
        assert segment(tmp_path, model) == 2
        assert "another napari-amodal run" in capsys.readouterr().err
        assert snapshot(out) == {**before, ".emb.lock": str(sleeper.pid).encode()}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert segment(tmp_path, model) == 0  # the dead run's lock is taken over
    assert not (out / ".emb.lock").exists()


@pytest.mark.parametrize("argv", [["segment", "--batch-size", "x", "a.tif"], ["segmnt"], [],
                                  ["segment", "a.tif", "--no-such-option"]])
def test_usage_errors_are_one_line_that_points_to_help(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ": error: " in err[0] and "--help)" in err[0] and not err[0].startswith("usage")


def test_failures_map_to_statuses_and_one_line():
    from napari_amodal.cli import describe_failure

    assert describe_failure(ValueError("x.tif: bad"))[0] == 2
    assert describe_failure(FileNotFoundError("x.tif: no such image file"))[0] == 2
    code, msg = describe_failure(PermissionError(errno.EACCES, "Permission denied", "/ro/out.json"))
    assert code == 1 and msg.startswith("/ro/out.json: permission denied")
    code, msg = describe_failure(OSError(errno.ENOSPC, "No space left", "/full/a.tif"))
    assert code == 1 and "/full/a.tif: no space left" in msg
    assert describe_failure(MemoryError())[0] == 1
    code, msg = describe_failure(RuntimeError("line one\nline two"))
    assert code == 1 and "\n" not in msg and "line one" in msg
