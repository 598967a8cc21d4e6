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
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from mkdcore.errors import DataError, MkdError

#: errors that mean "the disk (or the file-size limit) is full"
_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class StorageError(MkdError):
    """A file could not be written (disk full, size limit, permissions)."""


class CorruptFileError(DataError, ValueError):
    """A file mkd wrote earlier (or a user file it reads) cannot be read back.

    A :class:`DataError`, so the callers that already list bad data instead of stopping
    (the dataset checker, the importer) treat a corrupt file the same way; and a
    ``ValueError``, as the parser errors it replaces were, so code that skips an
    unreadable record (``except ValueError``, e.g. a worker polling its job record)
    keeps skipping it."""


def temp_path(path: Path) -> Path:
    """The temporary sibling ``path`` is written through (hidden, tagged with the pid)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def describe_os_error(exc: OSError) -> str:
    if exc.errno in _FULL:
        return "no space left (disk full or file-size limit)"
    return exc.strerror or type(exc).__name__


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first non-empty line of an exception's message (parsers such as torch's
    unpickler explain themselves over a dozen lines; the CLI prints one)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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


@contextmanager
def atomic_dir(path: Path, what: str = "folder") -> Iterator[Path]:
    """Yield an empty temporary folder to fill; on success it replaces ``path`` (an
    existing folder there is removed first: the swap of a whole folder cannot be one
    rename), on any failure it is removed and an :class:`OSError` becomes a one-line
    :class:`StorageError` naming ``path``."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except OSError as exc:
        raise StorageError(f"cannot write {what} {path}: {describe_os_error(exc)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_torch_save(path: Path, obj: Any, what: str = "checkpoint") -> None:
    """``torch.save`` through :func:`atomic_path`.

    Why a file object: given a path, torch writes through its C++ zip writer and a full
    disk surfaces as ``RuntimeError: [enforce fail ...] unexpected pos``; given a Python
    file, the writer's failing ``write`` raises ``OSError`` first, which torch wraps in
    that same ``RuntimeError``; the ``OSError`` is taken back out so the one-line
    :class:`StorageError` says what happened."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            try:
                torch.save(obj, fh)
            except RuntimeError as exc:
                cause = exc.__cause__ or exc.__context__
                if isinstance(cause, OSError):
                    raise cause from None
                raise

    atomic_save(path, write, what)


def read_torch(path: Path, what: str = "checkpoint", remedy: str = "") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; a missing, truncated or
    foreign file is one line naming ``path`` and the remedy (torch's own message runs
    over many lines and suggests ``weights_only=False``, which mkd never does)."""
    import torch

    path = Path(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CorruptFileError(f"{what} {path} does not exist{_then(remedy)}") from None
    except Exception as exc:  # noqa: BLE001  (unpickler, zip reader and storage errors of any kind)
        raise CorruptFileError(f"{what} {path} is corrupt ({_torch_reason(exc)}){_then(remedy)}") from None


def _torch_reason(exc: Exception) -> str:
    """The informative part of a ``torch.load`` error: its weights-only unpickler puts
    the actual problem after a paragraph about ``weights_only``; its zip reader after
    one sentence comes advice for torch developers."""
    marker = "WeightsUnpickler error:"
    text = str(exc)
    if marker in text:
        detail = next((line.strip() for line in text.split(marker, 1)[1].splitlines() if line.strip()), "")
        return f"not a weights-only torch file: {detail}" if detail else "not a weights-only torch file"
    return first_line(exc).split(". ", 1)[0]


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


def read_json_if_valid(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an
    object: for records whose absence or damage only means "not done, redo it"
    (manifests, start records, derive stamps), never an error."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _then(remedy: str) -> str:
    return f"; {remedy}" if remedy else ""


#: ``.name.tmp-<pid>`` (fileio) and ``name.tmp-<pid>`` (the checkpoint writer before it)
_TEMP = re.compile(r"^\.?.+\.tmp-(\d+)$")


def clean_stale_temps(folder: Path, alive: Callable[[int], bool] | None = None) -> int:
    """Remove ``.*.tmp-<pid>`` files and folders in ``folder`` whose writer is no longer
    running (a process killed while writing through :func:`atomic_path`, or while
    deriving a video into its temporary folder).

    Temp files of this process are kept: another thread of it may be writing one now
    (a stale one of a recycled pid is overwritten by its next write anyway)."""
    from mkdcore.parallel import pid_alive

    alive = alive or pid_alive
    removed = 0
    try:
        entries = list(Path(folder).iterdir())
    except OSError:  # missing, or not a folder: nothing to clean
        return 0
    for entry in entries:
        m = _TEMP.match(entry.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            _unlink_quietly(entry)
        removed += 1
    return removed


def append_line(path: Path, line: str, what: str = "log") -> None:
    """Append one line (metrics, logs); a full disk is one line naming the file. A line
    cut short by a kill is tolerated by the readers (they skip unparsable lines)."""
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line.rstrip("\n") + "\n")
    except OSError as exc:
        raise StorageError(f"cannot append to {what} {path}: {describe_os_error(exc)}") from None
