"""Job records as JSON files in the run directory (the durable record of the queue).

Layout (``runs_dir`` is on shared storage when workers run on several machines)::

    <runs_dir>/jobs/<job_id>/job.json        the JobRecord (atomically replaced)
    <runs_dir>/jobs/<job_id>/config.yaml     the resolved config its stages run with
    <runs_dir>/jobs/<job_id>/progress.jsonl  progress events of its stages
    <runs_dir>/jobs/<job_id>/logs/<stage>.log
    <runs_dir>/jobs/.lock                    one flock serialising every update

Redis only carries messages; losing it loses no job. All read-modify-write updates go
through :meth:`JobStore.transaction`, under a single flock: updates are rare (a few per
stage) so one lock costs nothing and rules out lock-order bugs across jobs (sweep members
share stages). Readers need no lock: files are replaced atomically.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from mkdcore import fileio, names, settings
from mkdcore.errors import MkdError
from mkdcore.fileio import CorruptFileError, atomic_write_text, clean_stale_temps
from mkdcore.jobs.model import JobRecord


class JobNotFound(MkdError):
    """No job with that id in this run directory."""


def default_runs_dir() -> Path:
    """``MKD_RUNS_DIR`` or ``./runs`` (the config default ``runtime.runs_dir``)."""
    return Path(settings.RUNS_DIR.get()).absolute()


def atomic_write(path: Path, text: str, what: str = "file") -> None:
    """Write ``text`` to ``path`` so readers see the old or the new file, never half
    (synced: these files are the queue's durable record); a full disk is one line."""
    atomic_write_text(path, text, what, fsync=True)


class JobStore:
    """Create, read, list and update job records under ``<runs_dir>/jobs``."""

    def __init__(self, runs_dir: str | Path) -> None:
        self.runs_dir = Path(runs_dir).absolute()
        self.root = self.runs_dir / "jobs"
        self._cleaned = False

    # ----------------------------------------------------------------- paths
    def job_dir(self, job_id: str) -> Path:
        """``<root>/<job_id>``; the id is validated and the folder kept under the root, as
        ids come from users and queue messages (``../../x`` must not reach another file)."""
        path = self.root / names.job_id(job_id)
        names.inside(self.root, path, "job directory")
        return path

    def record_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "job.json"

    def progress_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "progress.jsonl"

    def log_path(self, job_id: str, stage: str) -> Path:
        return self.job_dir(job_id) / "logs" / (stage.replace(":", "-").replace("/", "-") + ".log")

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """The store-wide lock (flock: released by the kernel if the holder dies)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                if not self._cleaned:
                    self._clean_stale_temps()
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _clean_stale_temps(self) -> None:
        """Temp files of writers killed mid-write (the first time this store is opened
        for writing: the lock is held, so no live writer of a record is skipped wrongly)."""
        self._cleaned = True
        clean_stale_temps(self.root)
        for job_id in self.ids():
            clean_stale_temps(self.job_dir(job_id))

    # ------------------------------------------------------------ read/write
    def save(self, job: JobRecord) -> None:
        atomic_write(self.record_path(job.id), job.model_dump_json(indent=1), "job record")

    def load(self, job_id: str) -> JobRecord:
        """The record of ``job_id``; a damaged one is a one-line :class:`CorruptFileError`."""
        path = self.record_path(job_id)
        if not path.is_file():
            raise JobNotFound(f"no job {job_id!r} in {self.root} (see `mkd status`; set --runs-dir or MKD_RUNS_DIR)")
        remedy = f"delete {path.parent} to forget the job"
        data = fileio.read_json(path, "job record", remedy)  # not UTF-8, not JSON, not an object: one line
        try:
            return JobRecord.model_validate(data)
        except ValidationError as err:
            from mkdcore.registry import format_validation_error

            reason = format_validation_error(err)
            reason = reason if len(reason) <= 200 else reason[:197] + "..."
            raise CorruptFileError(f"job record {path} is corrupt ({reason}); {remedy}") from None

    def resolve(self, prefix: str) -> str:
        """A full job id from an id or a unique prefix of one.

        The one place a user-typed id enters the store (status, logs, cancel, retry): it is
        validated first, and a prefix is matched against the listed ids, never globbed
        (``j*`` is refused, not a pattern)."""
        names.job_id(prefix)
        if self.record_path(prefix).is_file():
            return prefix
        matches = [job_id for job_id in self.ids() if job_id.startswith(prefix)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise JobNotFound(f"job id {prefix!r} is ambiguous: {', '.join(sorted(matches)[:5])}")
        raise JobNotFound(f"no job {prefix!r} in {self.root} (see `mkd status`; set --runs-dir or MKD_RUNS_DIR)")

    def ids(self) -> list[str]:
        """Ids of the job folders holding a record (folders whose names no job id could
        have, put there by hand, are left out rather than failing every listing)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if _is_job_id(p.name) and (p / "job.json").is_file())

    def all(self) -> list[JobRecord]:
        return self.scan()[0]

    def scan(self) -> tuple[list[JobRecord], dict[str, str]]:
        """Every readable record, and the one-line error of each damaged one: one bad
        file must not hide the other jobs (``mkd status`` lists it as corrupt)."""
        jobs, corrupt = [], {}
        for job_id in self.ids():
            try:
                jobs.append(self.load(job_id))
            except JobNotFound:
                continue  # removed since it was listed
            except CorruptFileError as exc:
                corrupt[job_id] = str(exc)
        return jobs, corrupt

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Transaction"]:
        """Read-modify-write under the store lock; changed records are saved on exit."""
        with self.lock():
            tx = Transaction(self)
            yield tx
            tx.commit()


class Transaction:
    """Records loaded inside :meth:`JobStore.transaction`; saved together at the end."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._jobs: dict[str, JobRecord] = {}
        self._snapshots: dict[str, str] = {}

    def get(self, job_id: str) -> JobRecord:
        if job_id not in self._jobs:
            job = self.store.load(job_id)
            self._jobs[job_id] = job
            self._snapshots[job_id] = job.model_dump_json()
        return self._jobs[job_id]

    def add(self, job: JobRecord) -> None:
        self._jobs[job.id] = job
        self._snapshots[job.id] = ""

    def all(self) -> list[JobRecord]:
        for job_id in self.store.ids():
            try:
                self.get(job_id)
            except (JobNotFound, CorruptFileError):
                continue
        return list(self._jobs.values())

    def commit(self) -> None:
        for job_id, job in self._jobs.items():
            if job.model_dump_json() != self._snapshots[job_id]:
                self.store.save(job)


def _is_job_id(value: str) -> bool:
    try:
        names.job_id(value)
    except names.UnsafeNameError:
        return False
    return True


def read_json(path: Path) -> dict | None:
    """A JSON file's object, or None if missing or unreadable (never raises)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
