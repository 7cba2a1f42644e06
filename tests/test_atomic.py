"""Atomic writes: a failure names the file the user asked for and leaves the earlier one intact."""

import errno
import os

import pytest

from napari_amodal.atomic import atomic_write_bytes


def test_a_full_disk_names_the_target_not_the_temporary_file(tmp_path, monkeypatch):
    target = tmp_path / "cells.json"
    target.write_bytes(b"earlier")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")  # as os.fsync reports it: no file name

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(target, b"new")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(target)
    assert target.read_bytes() == b"earlier" and os.listdir(tmp_path) == ["cells.json"]


def test_an_unwritable_folder_names_the_target(tmp_path, monkeypatch):
    import tempfile

    def refused(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / ".cells.json.1.abc.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as e:
        atomic_write_bytes(tmp_path / "cells.json", b"new")
    assert e.value.filename == str(tmp_path / "cells.json")
