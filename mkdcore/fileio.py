"""Files written whole or not at all, and read with one-line errors.

Why one module: every durable file mkd writes (manifests, checkpoints, job records,
results, episode files, features) must be seen by readers as the old or the new
version, never half; a full disk must say which file it could not write and leave no
temporary file behind; and a corrupt file must name itself and the remedy instead of
showing a parser's traceback. Doing this once keeps the eight places that write files
from drifting apart.
"""

from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mkdcore.errors import MkdError

#: errors that mean "the disk (or the file-size limit) is full"
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class StorageError(MkdError):
    """A file could not be written (disk full, size limit, permissions)."""


class CorruptFileError(MkdError):
    """A file mkd wrote earlier cannot be read back."""


def temp_path(path: Path) -> Path:
    """The temporary sibling ``path`` is written through (hidden, tagged with the pid)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def describe_os_error(exc: OSError) -> str:
    if exc.errno in _FULL:
        return "no space left (disk full or file-size limit)"
    return exc.strerror or type(exc).__name__


@contextmanager
def atomic_path(path: Path, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically, on
    any failure it is removed and an :class:`OSError` becomes a one-line
    :class:`StorageError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot create {path.parent} for {what}: {describe_os_error(exc)}") from None
    tmp = temp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _unlink_quietly(tmp)
        raise StorageError(f"cannot write {what} {path}: {describe_os_error(exc)}; nothing was changed") from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def atomic_write_bytes(path: Path, data: bytes, what: str = "file", fsync: bool = False) -> None:
    with atomic_path(path, what) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())


def atomic_write_text(path: Path, text: str, what: str = "file", fsync: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), what, fsync)


def atomic_write_json(path: Path, obj: Any, what: str = "file", fsync: bool = False) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n", what, fsync)


def atomic_save(path: Path, write: Callable[[Path], None], what: str = "file") -> None:
    """Run ``write(tmp)`` (e.g. ``torch.save`` or ``np.save``) then replace ``path``."""
    with atomic_path(path, what) as tmp:
        write(tmp)


def read_text(path: Path, what: str = "file", remedy: str = "") -> str:
    """UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is one line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CorruptFileError(f"{what} {path} does not exist{_then(remedy)}") from None
    except OSError as exc:
        raise CorruptFileError(f"cannot read {what} {path}: {describe_os_error(exc)}{_then(remedy)}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptFileError(f"{what} {path} is not UTF-8 text (byte {exc.start}){_then(remedy)}") from None


def read_json(path: Path, what: str = "file", remedy: str = "", expect: type = dict) -> Any:
    """Parsed JSON of ``path``, checked to be ``expect`` (a dict by default)."""
    text = read_text(path, what, remedy)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg}){_then(remedy)}") from None
    if expect is not None and not isinstance(value, expect):
        raise CorruptFileError(f"{what} {path} holds a {type(value).__name__}, not a {expect.__name__}{_then(remedy)}")
    return value


def _then(remedy: str) -> str:
    return f"; {remedy}" if remedy else ""


def clean_stale_temps(folder: Path, alive: Callable[[int], bool] | None = None) -> int:
    """Remove ``.*.tmp-<pid>`` files in ``folder`` whose writer is no longer running."""
    import re

    from mkdcore.parallel import pid_alive

    alive = alive or pid_alive
    pattern = re.compile(r"^\..+\.tmp-(\d+)$")
    removed = 0
    if not Path(folder).is_dir():
        return 0
    for entry in Path(folder).iterdir():
        m = pattern.match(entry.name)
        if not m or not entry.is_file():
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and alive(pid):
            continue
        _unlink_quietly(entry)
        removed += 1
    return removed
