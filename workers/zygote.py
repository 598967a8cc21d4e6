"""A zygote for stage processes: torch imported once per worker, one fork per stage.

Why: a queue stage is a fresh ``python -m workers.stage_child ...`` process (its own
process group, its own CUDA context, its memory returned when it exits), and each one
used to spend ~4 CPU-seconds importing torch, torchvision and timm before doing anything:
most of a short stage (``report``, ``mm_features``, an evaluate of a small student) and
a visible delay between the stages of every job. The zygote is one interpreter per
worker task process that imports those *libraries* once and then forks one child per
stage. The child is a real process (own pid, own session, ``PR_SET_PDEATHSIG``, exit
status, log file, environment and working directory) that runs its module with
``runpy`` as ``python -m`` would.

What is and is not shared with the child, and why it is safe:

* Only libraries are preloaded (what a stage spends its start on: ``MKD_STAGE_PRELOAD``
  for a worker), never ``mkdcore`` or ``plugins`` code (of ``workers``, only this module,
  which imports nothing of mkd): mkd's own code and plugins are imported afresh in every
  child, as in a new interpreter (a plugin installed while the worker runs is seen by
  its next stage).
* The zygote is single-threaded and never runs a torch op or initialises CUDA, so no
  OpenMP pool, CUDA context or held lock is copied into a child; it refuses to fork once
  CUDA is initialised (:func:`_refuse_reason`). The same reason lets mkd's own pools use a
  forkserver (:mod:`mkdcore.parallel`).
* The environment is the child's own, but the preloaded libraries read some variables
  at import (``OMP_NUM_THREADS`` by OpenMP, ``HF_HUB_OFFLINE`` by huggingface_hub,
  ``TIMM_*`` by timm ...). A child is forked only when its environment differs from the
  zygote's in variables read after the fork (:func:`unforkable`: ``MKD_*``, read by mkd code;
  ``CUDA_VISIBLE_DEVICES``, read at CUDA initialisation; ``PYTHONUNBUFFERED``,
  ``PYTHONDONTWRITEBYTECODE`` and ``PYTHONPATH``, applied by the child: ``sys.path`` is
  rebuilt from it, and the preloaded libraries are the same installed ones); otherwise :func:`workers.runner.spawn_stage` starts a plain process.
* The zygote ignores SIGTERM and SIGINT (a SLURM step or a terminal signals every process
  of the worker: the stage must get its grace period to checkpoint, not die with the
  zygote) and dies with its parent (``PR_SET_PDEATHSIG``); a stage dies with the zygote.
  So a killed worker task still takes its stage with it, as before.

Protocol (JSON lines over the zygote's stdin/stdout): the parent writes a request
``{"argv", "cwd", "env", "log", "capture", "session", "fsize"}``; the zygote forks and
answers ``{"pid"}`` (or ``{"refused": reason}``), and when the child has exited ``{"code",
"out", "err"}`` (``code`` as :mod:`subprocess` reports it: ``-N`` for signal N). One
child at a time: a worker task runs one stage at a time.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

#: Variables a child may set differently from the zygote: read after the fork.
LATE_READ_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PYTHONPATH"})
LATE_READ_PREFIX = "MKD_"


def die_with_parent() -> None:
    """``PR_SET_PDEATHSIG=SIGKILL``: this process dies when its parent does (Linux)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass  # not Linux: the watchdog still re-queues, the stage lock still prevents overlap


def unforkable(env: dict[str, str], zygote_env: dict[str, str]) -> list[str]:
    """The variables that ``env`` sets differently from the zygote's environment and that
    a preloaded library may have read at import: a child with any of them is not forked."""
    changed = {k for k in env.keys() | zygote_env.keys() if env.get(k) != zygote_env.get(k)}
    return sorted(k for k in changed if k not in LATE_READ_ENV and not k.startswith(LATE_READ_PREFIX))


# ----------------------------------------------------------------- zygote side
def _python_path(env: dict[str, str]) -> list[str]:
    return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]


def _child(req: dict[str, Any], out_w: int | None, err_w: int | None, site_path: list[str]) -> None:
    """In the forked child: become ``python -m ARGV[0] ARGV[1:]``; never returns."""
    import atexit
    import io
    import resource
    import runpy
    import traceback

    code = 1
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the zygote ignores them; a stage must not
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if req.get("session"):
            os.setsid()  # its own group: cancel signals the stage and its data-loader children
        die_with_parent()  # and it dies with the zygote, which dies with the worker task
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        if req.get("log"):
            log = os.open(req["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.close(log)
        else:
            os.dup2(out_w if out_w is not None else devnull, 1)
            os.dup2(err_w if err_w is not None else devnull, 2)
        if req.get("fsize") is not None:  # a full disk in the fault tests: writes past it fail with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
        unbuffered = bool(req["env"].get("PYTHONUNBUFFERED"))
        sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=unbuffered,
                                      line_buffering=not unbuffered, encoding="utf-8", errors="backslashreplace")
        sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                      encoding="utf-8", errors="backslashreplace")
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.path[:] = [req["cwd"], *_python_path(req["env"]), *site_path]  # as `python -m` builds it
        sys.dont_write_bytecode = bool(req["env"].get("PYTHONDONTWRITEBYTECODE"))
        sys.argv = list(req["argv"])
        try:
            runpy.run_module(req["argv"][0], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int) and exc.code is not None:
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - what the interpreter would print and exit 1 for
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()  # as at interpreter exit (logging flushes its handlers)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


#: this process's memory map: which shared libraries are loaded
MAPS = "/proc/self/maps"


def _refuse_reason() -> str | None:
    """Why forking now would hand the child a broken CUDA, if it would. torch's own flag
    misses a library that asked the CUDA runtime for the device count at import: that
    loads and initialises the driver (``libcuda``) without a context, and a forked child
    then fails at its first CUDA call. So a loaded driver counts as initialised."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return "CUDA is initialised in the zygote"
    try:
        with open(MAPS) as maps:
            if any("/libcuda.so" in line for line in maps):
                return "the CUDA driver (libcuda) is loaded in the zygote"
    except OSError:
        pass  # no /proc: torch's flag is all there is
    return None


def _serve_one(req: dict[str, Any], answer, site_path: list[str]) -> None:
    refused = _refuse_reason()
    if refused:
        answer({"refused": refused})
        return
    capture = bool(req.get("capture")) and not req.get("log")
    out_r, out_w = os.pipe() if capture else (None, None)
    err_r, err_w = os.pipe() if capture else (None, None)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r):
            if fd is not None:
                os.close(fd)
        _child(req, out_w, err_w, site_path)
    for fd in (out_w, err_w):
        if fd is not None:
            os.close(fd)
    answer({"pid": pid})
    chunks: dict[int, list[bytes]] = {fd: [] for fd in (out_r, err_r) if fd is not None}
    open_fds = set(chunks)
    if not open_fds:
        _, status = os.waitpid(pid, 0)
        answer({"code": os.waitstatus_to_exitcode(status), "out": "", "err": ""})
        return
    status = None
    exited_at = 0.0
    while True:
        if status is None:
            got, st = os.waitpid(pid, os.WNOHANG)
            if got:
                status, exited_at = st, time.monotonic()
        # after the child exits, a grandchild it left may hold the pipes: stop reading soon
        if status is not None and (not open_fds or time.monotonic() - exited_at > 2.0):
            break
        ready = select.select(list(open_fds), [], [], 0.05)[0] if open_fds else (time.sleep(0.02) or [])
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.discard(fd)
    for fd in chunks:
        os.close(fd)
    text = {fd: b"".join(c).decode(errors="replace") for fd, c in chunks.items()}
    answer({"code": os.waitstatus_to_exitcode(status), "out": text.get(out_r, ""), "err": text.get(err_r, "")})


def serve() -> None:
    """The zygote's loop: import the modules named on its command line, then serve one
    request at a time until stdin closes."""
    import importlib

    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    own = set(_python_path(dict(os.environ)))
    site_path = [p for p in sys.path[1:] if p not in own]  # what a child's `python -m` adds its own to
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a stage that needs it reports its own error
            pass
    channel = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers goes down the channel

    def answer(msg: dict[str, Any]) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    answer({"ready": True})
    for line in sys.stdin:
        if line.strip():
            _serve_one(json.loads(line), answer, site_path)


# ------------------------------------------------------------------ parent side
class ZygoteDied(RuntimeError):
    """The zygote exited (its child, with ``PR_SET_PDEATHSIG``, died with it)."""


class ForkedProcess:
    """A running child of the zygote, with the part of :class:`subprocess.Popen` mkd uses:
    ``pid``, ``returncode``, ``poll()``, ``wait(timeout)`` (``TimeoutExpired``), ``kill()``.
    With ``capture``, ``out``/``err`` hold its output once it has exited."""

    def __init__(self, zygote: Zygote, pid: int, args: list[str]) -> None:
        self.zygote, self.pid, self.args = zygote, pid, args
        self.returncode: int | None = None
        self.out = self.err = ""

    def poll(self) -> int | None:
        if self.returncode is None:
            self._finish(self.zygote.read(timeout=0))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            msg = self.zygote.read(timeout=timeout)
            if msg is None:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            self._finish(msg)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _finish(self, msg: dict[str, Any] | None) -> None:
        if msg is not None:
            self.returncode, self.out, self.err = msg["code"], msg["out"], msg["err"]
            self.zygote.busy = False


class Zygote:
    """One zygote process, started with this process's environment and dying with it."""

    def __init__(self, preload: list[str], cwd: str | None = None, start_timeout: float = 300) -> None:
        self.env = self.environment()
        self.proc = subprocess.Popen([sys.executable, "-m", "workers.zygote", *preload], env=self.env, cwd=cwd,
                                     stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, bufsize=0,
                                     preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        self.busy = False
        self.refusal = ""  # why the last start() returned None
        self._buffer = b""  # answers read but not yet returned (select sees the pipe, not a buffer)
        self._ready = False  # its imports run in the background until the first start()
        self._start_timeout = start_timeout

    def _wait_ready(self) -> None:
        if not self._ready:
            if self.read(timeout=self._start_timeout) != {"ready": True}:
                self.close()
                raise ZygoteDied("the stage zygote did not start")
            self._ready = True

    @classmethod
    def environment(cls) -> dict[str, str]:
        """The environment a zygote starts with: this process's, now."""
        return dict(os.environ)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stale(self) -> bool:
        """This process's environment has changed since the zygote started in a variable a
        preloaded library reads at import (a library imported here set one, say): a new
        zygote would fork what this process would now start."""
        return bool(unforkable(self.environment(), self.env))

    def read(self, timeout: float | None) -> dict[str, Any] | None:
        """The zygote's next answer, or None when none came within ``timeout`` seconds."""
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([fd], [], [], left)[0]:
                return None
            data = os.read(fd, 65536)
            if not data:
                self.proc.wait()
                # its child died with it (PR_SET_PDEATHSIG): report it as killed
                return {"code": -signal.SIGKILL, "out": "", "err": f"the stage zygote died (exit {self.proc.returncode})"}
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def start(self, argv: list[str], *, cwd: str, env: dict[str, str], log: str | None = None,
              capture: bool = False, session: bool = False, fsize: int | None = None) -> ForkedProcess | None:
        """Fork ``python -m ARGV`` (one child at a time); None when the zygote cannot (its
        environment differs in a variable read at import, or it refused): start it plainly."""
        assert not self.busy, "the zygote runs one child at a time"
        self.refusal = ""
        blocking = unforkable(env, self.env)
        if blocking:
            self.refusal = f"the environment sets {', '.join(blocking)} differently from the zygote's"
            return None
        self._wait_ready()
        assert self.proc.stdin is not None
        request = {"argv": argv, "cwd": cwd, "env": env, "log": log, "capture": capture, "session": session,
                   "fsize": fsize}
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        except BrokenPipeError as exc:
            raise ZygoteDied("the stage zygote is gone") from exc
        msg = self.read(timeout=60)
        if msg is None or "pid" not in msg:
            if msg is not None and "refused" in msg:
                self.refusal = msg["refused"]
                return None
            raise ZygoteDied(f"the stage zygote did not fork: {msg}")
        self.busy = True
        return ForkedProcess(self, msg["pid"], argv)

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_SHARED: dict[Callable[[], Zygote], Zygote] = {}


def shared(make: Callable[[], Zygote]) -> Zygote:
    """This process's zygote made by ``make`` (a new one when there is none, it died, it
    is busy with a child not waited for, or it is stale); closed when the process exits."""
    zygote = _SHARED.get(make)
    if zygote is None or not zygote.alive() or zygote.busy or zygote.stale():
        if zygote is not None:
            zygote.close()
        if not _SHARED:
            import atexit

            atexit.register(close_shared)
        zygote = _SHARED[make] = make()
    return zygote


def close_shared() -> None:
    """Stop this process's zygotes (each one's running child, if any, dies with it)."""
    while _SHARED:
        _SHARED.popitem()[1].close()


if __name__ == "__main__":
    serve()
