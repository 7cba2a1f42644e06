"""Atomic file writes: the one place every output of napari-amodal goes through.

A file is written to a temporary name in its own folder, flushed to disk and
renamed over the target, so a crash, kill -9, a full disk or a cancel leaves
the previous file byte for byte as it was. Temporary names carry the writer's
process id (``.NAME.PID.XXXX.tmp``); leftovers of processes that are gone are
removed the next time the same file is written.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_bytes", "ensure_folder", "file_mode", "output_lock"]


def file_mode() -> int:
    """0o666 less the process umask: the mode a plain ``open(path, "w")`` would give."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def check_folder(path, what: str = "output folder") -> Path:
    """``path`` as a folder that is or can be made, without making it: NotADirectoryError
    naming it when it, or a part of its path, is a file."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path}: the {what} is a file, not a folder")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise NotADirectoryError(f"{path}: cannot make the {what} ({parent} is a file)")
    return path


def ensure_folder(path, what: str = "output folder") -> Path:
    """Create folder ``path`` (and parents); a clear error when it or a parent is a file."""
    path = check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent became a file meanwhile
        raise NotADirectoryError(f"{path}: cannot make the {what} (a part of its path is a file)") from None
    return path


@contextlib.contextmanager
def atomic_path(path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; write to it inside the block.

    On leaving the block normally the file is fsync'ed, given the usual
    permissions and renamed over ``path``; on any exception it is removed and
    ``path`` is untouched. ``suffix`` (e.g. ``".png"``) ends the temporary name
    for writers that pick the format from it.
    """
    path = Path(path)
    ensure_folder(path.parent)
    _remove_orphans(path)
    tmp = ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{suffix}", dir=path.parent)
        os.close(fd)
        yield Path(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())  # mkstemp makes owner-only files
        os.replace(tmp, path)
    except OSError as e:
        ours = e.filename is None or Path(str(e.filename)).name.startswith(f".{path.name}.")  # a temporary file
        if ours and e.errno is not None:  # name the file the user asked for, not the temporary one
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


class BusyError(FileExistsError):
    """Another live process is writing the same outputs."""


@contextlib.contextmanager
def output_lock(folder, stem: str) -> Iterator[None]:
    """Hold ``folder/.STEM.lock`` while writing the outputs named STEM there.

    A second run writing the same outputs at the same time is refused (its
    files would interleave with the first's); a lock left by a process that is
    gone (kill -9) is taken over.
    """
    lock = Path(folder) / f".{stem}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            pid = lock.read_text().strip() if lock.exists() else ""
            if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
                raise BusyError(f"{folder}: another napari-amodal run (process {pid}) is writing {stem}.* here; "
                                "wait for it or choose another --out folder") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
    else:  # pragma: no cover - lost a race twice
        raise BusyError(f"{folder}: cannot lock {stem}.* (another run keeps taking it)")
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()


def _remove_orphans(path: Path) -> None:
    """Remove temporary files of ``path`` left by writers that no longer run."""
    for tmp in path.parent.glob(f".{path.name}.*.tmp*"):
        pid = tmp.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
