"""What rankadapt may delete or replace, atomic directory writes, and the run-directory lock.

The rule: rankadapt deletes or replaces only what it can prove it wrote.

- Every directory it writes (``adapter/``, ``model/``, ``checkpoint/``, a merged export) is written
  under a temporary name with an owner marker (:data:`OWNER_MARKER`) inside, then swapped into
  place (:class:`atomic_dir`). An existing target without the marker is never replaced.
- A run directory gets :data:`RUN_MARKER` when a fresh run starts in it; only then are its
  ``config.yaml``, ``metrics.jsonl`` and ``results.json`` rankadapt's to remove on a fresh start.
- One run at a time per directory: :class:`RunLock` holds an ``fcntl.flock`` on
  :data:`LOCK_FILE` for the lifetime of the run. The operating system releases it when the process
  dies (kill -9 included), so a lock left by a dead process never blocks the next run.

New directories and files follow the process umask (a shared ``output_dir`` stays shared).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .errors import ConfigError

OWNER_MARKER = ".rankadapt-owned"
RUN_MARKER = ".rankadapt-run"
LOCK_FILE = ".rankadapt.lock"
RUN_OUTPUTS = ("config.yaml", "metrics.jsonl", "results.json", "checkpoint", "adapter", "model")
"""What a run writes at the top of its directory (``tensorboard/`` is appended to, never removed)."""

crash_hook: Callable[[str], None] | None = None
"""Called by :func:`crash_point`; the fault-injection tests set it to stop a run at a given instant."""


def crash_point(where: str) -> None:
    """A named instant at which a crash must leave everything resumable (see ``crash_hook``)."""
    if crash_hook is not None:
        crash_hook(where)


# ==================================================================================================
# Ownership
# ==================================================================================================

def is_owned(path: Path) -> bool:
    """Whether rankadapt wrote the directory ``path`` (it holds the owner marker)."""
    return path.is_dir() and (path / OWNER_MARKER).is_file()


def remove_owned(path: Path) -> None:
    """Remove a directory rankadapt wrote; anything else is refused (a bug, not a user error)."""
    if not is_owned(path):
        raise RuntimeError(f"refusing to remove {path}: rankadapt did not write it")
    shutil.rmtree(path)


def temporaries_of(target: Path) -> list[Path]:
    """Temporary siblings of ``target`` that :class:`atomic_dir` creates: ``.NAME.tmp-*`` and ``.NAME.old``."""
    if not target.parent.is_dir():
        return []
    return sorted(p for p in target.parent.glob(f".{target.name}.*") if p.is_dir())


def remove_stale_temporaries(target: Path) -> None:
    """Remove what interrupted writes of ``target`` left: owned temporaries, and empty ones (a crash
    right after the temporary directory was created, before its marker)."""
    for path in temporaries_of(target):
        if is_owned(path):
            shutil.rmtree(path, ignore_errors=True)
        elif not any(path.iterdir()):
            path.rmdir()


def _not_owned(target: Path, way_out: str) -> ConfigError:
    kind = "a file" if not target.is_dir() else "a directory rankadapt did not write"
    return ConfigError(f"{target} already exists and is {kind}; rankadapt replaces only what it wrote itself, "
                       f"so it is left untouched. {way_out}")


def process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class atomic_dir:
    """Write a directory under a temporary name, then swap it into place.

    ``with atomic_dir(target) as tmp:`` — fill ``tmp``; on success it replaces ``target``. A crash at
    any instant leaves either the old or the new complete directory: between the two renames of the
    swap, the old one waits as ``.NAME.old`` and is moved back by the next write or by
    :func:`restore_interrupted_swap`. ``target`` must not exist, be empty, or be one rankadapt wrote.
    """

    def __init__(self, target: str | os.PathLike, way_out: str = "Choose another directory or move it away.") -> None:
        self.target = Path(target)
        self.way_out = way_out

    def __enter__(self) -> Path:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        restore_interrupted_swap(self.target)
        if self.target.exists() and not is_owned(self.target) and not _is_empty_dir(self.target):
            raise _not_owned(self.target, self.way_out)
        remove_stale_temporaries(self.target)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent))
        os.chmod(self.tmp, 0o777 & ~process_umask())  # mkdtemp's 0700 would hide a shared run from its group
        (self.tmp / OWNER_MARKER).write_text(json.dumps({"written_by": "rankadapt"}) + "\n")
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        _follow_umask(self.tmp)
        crash_point("swap: before")
        old = _old_of(self.target)
        if self.target.exists():
            if _is_empty_dir(self.target) and not is_owned(self.target):
                self.target.rmdir()
            else:
                os.replace(self.target, old)
        crash_point("swap: between the renames")
        os.replace(self.tmp, self.target)
        crash_point("swap: after")
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)


def _follow_umask(directory: Path) -> None:
    """Give the files written into ``directory`` the umask's modes (safetensors creates 0600 files)."""
    mask = process_umask()
    for path in directory.rglob("*"):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def restore_interrupted_swap(target: Path) -> None:
    """After a crash between the two renames of a swap, ``target`` is missing and its last complete
    version waits as ``.NAME.old``: move it back."""
    old = _old_of(target)
    if not target.exists() and is_owned(old):
        os.replace(old, target)


def _old_of(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


# ==================================================================================================
# Run directories
# ==================================================================================================

def refuse_foreign_outputs(run_dir: Path) -> None:
    """Refuse a fresh run in ``run_dir`` if it would replace anything rankadapt cannot prove it wrote.

    Without :data:`RUN_MARKER` none of the names a run writes may exist (``output_dir=.`` next to a
    base model in ``./model`` must not delete it); with it, the directories among them must still
    carry their owner marker.
    """
    marked = (run_dir / RUN_MARKER).is_file()
    foreign = [name for name in RUN_OUTPUTS if (run_dir / name).exists()
               and (not marked or (name in ("checkpoint", "adapter", "model") and not is_owned(run_dir / name)))]
    if foreign:
        shown = ", ".join(name + ("/" if (run_dir / name).is_dir() else "") for name in foreign)
        raise ConfigError(f"output_dir {run_dir} already holds {shown}, which rankadapt did not write (or an older "
                          "version wrote); a fresh run would replace them, so nothing was touched. Use another "
                          "output_dir, or move them away; to continue a run of this version use train.resume=true")


def clear_run_outputs(run_dir: Path) -> None:
    """Remove an earlier run's outputs (checked by :func:`refuse_foreign_outputs`) and mark ``run_dir``."""
    refuse_foreign_outputs(run_dir)
    for name in RUN_OUTPUTS:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for name in ("checkpoint", "adapter", "model"):
        remove_stale_temporaries(run_dir / name)
    (run_dir / RUN_MARKER).write_text(json.dumps({"created": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


def make_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents), turning the ways this fails into one clear message."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".rankadapt-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except FileExistsError:
        raise ConfigError(f"output_dir {run_dir} is a file (or lies under one); choose a directory path") from None
    except NotADirectoryError:
        raise ConfigError(f"output_dir {run_dir} lies under a file, not a directory; choose another output_dir") from None
    except PermissionError:
        raise ConfigError(f"output_dir {run_dir} is not writable by this user; choose another output_dir or fix its "
                          "permissions") from None
    except OSError as err:
        raise ConfigError(f"output_dir {run_dir} cannot be written: {err.strerror or err}; choose another "
                          "output_dir") from None


class RunLock:
    """An exclusive lock on a run directory for the lifetime of a run (only the main process takes it).

    ``fcntl.flock`` belongs to the open file: the operating system drops it when the process exits
    in any way, so a lock file left behind by a killed run is simply taken over. The file holds the
    holder's pid, host and start time, for the message a second run gets.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None

    def acquire(self) -> RunLock:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise ConfigError(f"output_dir {self.path.parent} is in use by another rankadapt run ({_describe(holder)}); "
                              "two runs in one directory would mix their outputs. Wait for it to finish, or use "
                              "another output_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file in the same directory, then rename it over ``path``: a
    reader (or a crash) never sees half a file. Used by the tokenisation and pixel caches and by
    predictions.jsonl."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
