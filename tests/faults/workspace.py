"""A case's private copy of one finished smoke experiment, and how a case is run.

Why one fixed path: stage keys include the dataset root's absolute path, so a copy of a
finished run is "finished" only at the path it was made at. The template is built once
per session at ``<base>/ws`` and moved to ``<base>/template``; each case gets a fresh
copy at ``<base>/ws`` (cases run one after another; the copy is reset to the template
between cases) and nothing is shared between cases. A failed case's workspace is kept under ``<base>/failed/<id>`` for inspection.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
#: files whose content may change without anything being altered (locks)
_VOLATILE = (".run.lock", ".lock")


@dataclass
class Outcome:
    """What a command did: exit code, captured streams, and anything a ``call`` adds."""

    code: int
    out: str = ""
    err: str = ""
    escaped: BaseException | None = None  # a non-MkdError exception that escaped main()
    extra: dict[str, Any] = field(default_factory=dict)


class Workspace:
    """Paths of one case's copy: ``data/smoke``, ``runs``, ``smoke.yaml``, ``episodes.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data" / "smoke"
        self.runs = root / "runs"
        self.cfg = root / "smoke.yaml"
        self.episodes = root / "episodes.json"
        self.cleanups: list[Any] = []  # callables run after the case (processes it started)

    # ----------------------------------------------------------- lookups
    def stage(self, name: str) -> Path:
        """The stage directory of ``name`` (``teacher:rgb``) in this experiment."""
        return self.root / json.loads((self.root / "stages.json").read_text())[name]

    @property
    def job(self) -> str:
        """The id of the job recorded in the template (``runs/jobs/<id>``)."""
        return (self.root / "job_id.txt").read_text().strip()

    def fmt(self, arg: str) -> str:
        """Fill placeholders; a leading ``@stage`` (``@teacher:rgb/model``) becomes that stage's folder."""
        if arg.startswith("@"):
            name, _, rest = arg[1:].partition("/")
            return str(self.stage(name) / rest) if rest else str(self.stage(name))
        return arg.format(ws=self.root, cfg=self.cfg, runs=self.runs, data=self.data, episodes=self.episodes,
                          job=self.job if "{job}" in arg else "")

    def rel(self, pattern: str) -> str:
        """``@student:baseline/log.txt`` -> ``runs/stages/student/<key>/log.txt``; others unchanged."""
        if not pattern.startswith("@"):
            return pattern
        name, _, rest = pattern[1:].partition("/")
        return str(self.stage(name).relative_to(self.root) / (rest or "**"))

    # ----------------------------------------------------------- edits
    def write(self, path: Path, data: bytes | str) -> None:
        """Replace ``path`` (unlinked first, so no other copy of the inode changes)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            path.unlink()
        path.write_bytes(data.encode() if isinstance(data, str) else data)

    def corrupt(self, path: Path, how: str = "garbage") -> None:
        """``garbage`` (random-looking bytes), ``truncate`` (first half), ``empty``, ``text``, ``latin1``."""
        path = Path(path)
        old = path.read_bytes() if path.exists() else b""
        data = {"garbage": bytes((i * 97 + 13) % 256 for i in range(max(64, len(old) // 4))),
                "truncate": old[: len(old) // 2],
                "empty": b"",
                "text": b"this is not what mkd wrote\n",
                "latin1": b"name: caf\xe9 \xff\xfe\n"}[how]
        self.write(path, data)

    def edit_config(self, path: str, value: Any, file: Path | None = None) -> None:
        """Set the dotted ``path`` of the YAML config to ``value``."""
        file = file or self.cfg
        data = yaml.safe_load(file.read_text())
        *parents, last = path.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
        self.write(file, yaml.safe_dump(data, sort_keys=False))

    def unfinish(self, stage: str) -> Path:
        """Remove ``stage``'s manifest so it is not done; returns its directory."""
        d = self.stage(stage)
        (d / "manifest.json").unlink()
        return d

    def bad_copy(self, name: str = "bad") -> Path:
        """A copy of the dataset at ``<ws>/<name>`` for cases that break data; frames are
        hard-linked like the workspace's (the edits unlink before they write), so the
        copy is cheap and its checksums are the template's, already known."""
        dst = self.root / name
        shutil.copytree(self.data, dst, copy_function=_copy_or_link)
        return dst

    # ----------------------------------------------------------- checks
    def files(self, globs: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[Path]:
        found: set[Path] = set()
        exclude = tuple(self.rel(x) for x in exclude)
        for g in map(self.rel, globs):
            found.update(p for p in self.root.glob(g) if p.is_file() and not p.is_symlink())
        rel = lambda p: str(p.relative_to(self.root))  # noqa: E731
        return sorted(p for p in found if p.name not in _VOLATILE and not any(fnmatch.fnmatch(rel(p), x) for x in exclude))

    def snapshot(self, globs: tuple[str, ...], exclude: tuple[str, ...] = ()) -> dict[str, str]:
        """``relative path -> blake2b digest`` of the protected files."""
        return {str(p.relative_to(self.root)): digest(p) for p in self.files(globs, exclude)}

    def matches(self, globs: tuple[str, ...]) -> set[str]:
        return {str(p.relative_to(self.root)) for g in globs for p in self.root.glob(g)}

    def temp_files(self) -> set[str]:
        """Temporary files mkd writes through (``.name.tmp-PID``) anywhere in the workspace."""
        return {os.path.relpath(os.path.join(folder, name), self.root)
                for folder, dirs, files in os.walk(self.root) for name in (*dirs, *files)
                if ".tmp-" in name or name.endswith(".tmp")}


_DIGESTS: dict[tuple[int, int, int, int], str] = {}


def digest(path: Path) -> str:
    """blake2b of the file; cached by (device, inode, size, mtime) so the hard-linked
    template files are read once per session, while any write (new inode or new mtime)
    is hashed afresh."""
    st = path.stat()
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        with open(path, "rb") as fh:
            _DIGESTS[key] = hashlib.file_digest(fh, "blake2b").hexdigest()
    return _DIGESTS[key]


# ----------------------------------------------------------------- template
def build_template(base: Path) -> Path:
    """Run the smoke experiment once at ``<base>/ws``, add frozen episodes and one job
    record, then move it to ``<base>/template``."""
    from mkdcore.cli.main import main
    from mkdcore.config import load_config
    from mkdcore.jobs.store import JobStore
    from mkdcore.jobs.submit import build_job, load_members, record_and_dispatch
    from mkdcore.stages.dag import plan
    from mkdcore.stages.runner import run_experiment

    ws = Workspace(base / "ws")
    ws.root.mkdir(parents=True)
    data = yaml.safe_load(SMOKE.read_text())
    data["data"]["root"] = str(ws.data)
    data["runtime"]["runs_dir"] = str(ws.runs)
    ws.cfg.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(ws.cfg, [])
    run_experiment(cfg, echo=lambda m: None)
    (ws.root / "stages.json").write_text(json.dumps({n.name: str(n.stage_dir.relative_to(ws.root)) for n in plan(cfg)}))
    e = cfg.episodes
    try:
        main(["data", "episodes", str(ws.data), "--split", "test", "--n", "20", "--seed", "7", "--way", str(e.way),
              "--shot", str(e.shot), "--query", str(e.query_test), "--out", str(ws.episodes)])
    except SystemExit as exc:
        assert not exc.code, "mkd data episodes failed while building the fault template"
    # one job record, as `mkd submit` writes it, its first unfinished stage queued on a broker that never sees it
    members = load_members(ws.cfg, ["training.tasks=5"], [], check_plugins=False)  # students not done: queued
    jobs = [build_job(m, name=None, group=None, priority=5, queue="mkd", code=None, grace_s=1.0, max_attempts=3)
            for m in members]
    record_and_dispatch(jobs, lambda job, stage: None)
    (ws.root / "job_id.txt").write_text(JobStore(ws.runs).ids()[0])
    template = base / "template"
    ws.root.rename(template)
    return template


#: files mkd changes in place (appends, truncation, lock contents): copied, never linked
IN_PLACE_SUFFIXES = (".jsonl", ".txt", ".log", ".lock")


def _copy_or_link(src: str, dst: str) -> None:
    """Hard-link every file mkd only ever replaces (it writes through a temporary file
    and ``os.replace``: a new inode) and the cases unlink before they write, so the
    template's copy never changes; the files mkd appends to or rewrites in place are
    copied. If something did write a linked file in place, its mtime changes and the
    checksum check reports it. Linking makes a workspace ~10x cheaper than copying."""
    if src.endswith(IN_PLACE_SUFFIXES):
        shutil.copy2(src, dst)
    else:
        os.link(src, dst)


def fresh(template: Path) -> Workspace:
    """A private copy of the template at the fixed workspace path: made once, then reset
    to the template before each use (:func:`_reset`), which touches only what the last
    user changed instead of linking ~2,600 entries and deleting them again each time."""
    root = template.parent / "ws"
    if root.exists():
        _reset(str(template), str(root))
    else:
        shutil.copytree(template, root, symlinks=True, copy_function=_copy_or_link)
    return Workspace(root)


def _reset(src: str, dst: str) -> None:
    """Make ``dst`` what ``copytree(src, dst, copy_function=_copy_or_link)`` would make.

    A linked file is unchanged exactly when it is still the template's inode (mkd and the
    cases replace files, never write linked ones in place); a copied file (appended to in
    place) when its size and mtime are the template's. Directories get the template's
    mtime back, since the dataset fingerprint reads the video folders' mtimes."""
    want = {e.name: e for e in os.scandir(src)}
    for e in os.scandir(dst):
        s = want.get(e.name)
        if s is None or s.is_symlink() or e.is_symlink() or s.is_dir() != e.is_dir(follow_symlinks=False):
            _remove(e)
        elif not s.is_dir() and not _same_file(s, e):
            os.unlink(e.path)
    for name, s in want.items():
        d = os.path.join(dst, name)
        if s.is_symlink():
            if not os.path.lexists(d):
                os.symlink(os.readlink(s.path), d)
        elif s.is_dir():
            if os.path.isdir(d):
                _reset(s.path, d)
            else:
                shutil.copytree(s.path, d, symlinks=True, copy_function=_copy_or_link)
        elif not os.path.lexists(d):
            _copy_or_link(s.path, d)
    st = os.stat(src)
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _same_file(src: os.DirEntry, dst: os.DirEntry) -> bool:
    if src.name.endswith(IN_PLACE_SUFFIXES):
        a, b = src.stat(), dst.stat(follow_symlinks=False)
        return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)
    return src.inode() == dst.inode()


def _remove(entry: os.DirEntry) -> None:
    if entry.is_dir(follow_symlinks=False):
        shutil.rmtree(entry.path)
    else:
        os.unlink(entry.path)


def retire(ws: Workspace, case_id: str, failed: bool) -> None:
    """Stop what the case started; keep a failed case's workspace under ``failed/<id>``
    (a passed one is reset by the next :func:`fresh`)."""
    for cleanup in reversed(ws.cleanups):
        cleanup()
    if failed:
        dst = ws.root.parent / "failed" / case_id
        dst.parent.mkdir(exist_ok=True)
        if dst.exists():
            shutil.rmtree(dst)
        ws.root.rename(dst)


# ----------------------------------------------------------------- running
def mkd_env(ws: Workspace, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a subprocess ``mkd``: this interpreter's, a broker nobody
    listens on (status answers "unknown" at once), the workspace's runs dir."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO), "MKD_RUNS_DIR": str(ws.runs),
            "MKD_STATE_DIR": str(ws.root / "state"), "MKD_BROKER_URL": "redis://127.0.0.1:9/0", **(extra or {})}


def run_subprocess(ws: Workspace, argv: list[str], env: dict[str, str] | None = None, fsize: int | None = None,
                   timeout: float = 240) -> Outcome:
    """``mkd ARGV`` in its own process, from the workspace; with ``fsize`` no file may
    grow past that many bytes and SIGXFSZ is ignored, so writes fail with EFBIG as on a
    full disk. The process is forked from a zygote that has torch imported
    (:mod:`tests.faults.zygote`): a real process, without ~4 CPU-s of imports each."""
    from tests.faults.zygote import run_mkd

    code, out, err = run_mkd(argv, ws.root, mkd_env(ws, env), fsize=fsize, timeout=timeout)
    return Outcome(code, out, err)


def signal_training_teacher(template: Path, signum: int) -> tuple[Outcome, Path]:
    """``mkd run --stages teacher:rgb`` on a copy of ``template`` with one DataLoader
    worker, in a process group of its own (as a queue stage or a terminal's job runs),
    sent ``signum`` to its whole group once it has trained 4 tasks: its outcome and the
    stage folder it made."""
    import time

    from tests.faults.zygote import zygote

    ws = fresh(template)
    before = set((ws.runs / "stages" / "teacher").iterdir())
    progress = ws.root / "progress.jsonl"
    argv = ["run", str(ws.cfg), "--stages", "teacher:rgb", "--set", "data.num_workers=1",
            "--set", "teacher.training.tasks=2000", "--set", "teacher.training.checkpoint_every=1000"]
    proc = zygote().run(argv, ws.root, mkd_env(ws, {"MKD_PROGRESS_FILE": str(progress)}), session=True)

    def training() -> bool:
        events = [json.loads(x) for x in progress.read_text().splitlines()] if progress.exists() else []
        return any(e["stage"] == "teacher:rgb" and e["event"] == "progress" and e["step"] >= 4 for e in events)

    try:
        deadline = time.monotonic() + 120
        while not training():
            assert proc.poll() is None, proc.err[-3000:]
            assert time.monotonic() < deadline, "the teacher never trained"
            time.sleep(0.05)
        os.killpg(proc.pid, signum)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    (stage,) = set((ws.runs / "stages" / "teacher").iterdir()) - before
    return Outcome(code, proc.out, proc.err), stage

