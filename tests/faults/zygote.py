"""Real ``mkd`` processes without paying torch's import in each: a zygote.

Why: every ``python -m mkdcore.cli.main`` child that trains or extracts imports
torch + torchvision + timm first (~4 CPU-seconds on the CI machine), and the process
faults (kill -9, a full disk) need a real process, several per session. The zygote is
one interpreter per test process that imports those *libraries* once and then forks one
child per command. A child is a real process with its own pid, rlimits, exit status and
stdio (SIGKILL, ``RLIMIT_FSIZE`` and exit codes behave as for an exec'd ``mkd``); it runs
``mkdcore.cli.main`` as ``python -m`` does (``runpy``, ``__main__``) with the command's
argv, cwd and environment. No ``mkdcore``/``plugins`` module is imported before the fork,
so everything of mkd's runs afresh in each child, as in a new interpreter.

Forking is safe here for the reason mkd's own pools use a forkserver
(``mkdcore.parallel``): the zygote is single-threaded and never runs a torch op, so no
OpenMP/intra-op thread exists when it forks.

Protocol (JSON lines): the test writes ``{"argv", "cwd", "env", "fsize", "capture"}``;
the zygote forks, answers ``{"pid"}``, and when the child has exited ``{"code", "out",
"err"}`` (``code`` as ``subprocess``: ``-N`` for a signal). Children's stdout/stderr are
pipes (not files, so a file-size limit never applies to them), read by the zygote.
"""

from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
#: what a training/extracting child spends most of its start on; libraries only (see above)
PRELOAD = ("torch", "torchvision", "timm", "numpy", "PIL.Image", "safetensors.torch", "yaml", "pydantic")


# ----------------------------------------------------------------- zygote side
def _child(req: dict[str, Any], out_w: int | None, err_w: int | None) -> None:
    """In the forked child: become ``python -m mkdcore.cli.main ARGV``; never returns."""
    import atexit as child_atexit
    import resource
    import runpy
    import signal
    import traceback

    code = 1
    try:
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # the zygote had swapped them
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(out_w if out_w is not None else devnull, 1)
        os.dup2(err_w if err_w is not None else devnull, 2)
        if req.get("fsize") is not None:  # a full disk: writes past the limit fail with EFBIG
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (req["fsize"], req["fsize"]))
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        sys.path[0] = req["cwd"]  # `python -m` puts the working directory first
        sys.argv = ["-m", *req["argv"]]
        try:
            runpy.run_module("mkdcore.cli.main", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if not isinstance(exc.code, int) and exc.code is not None:
                print(exc.code, file=sys.stderr)
        except BaseException:  # noqa: BLE001 - what the interpreter would print and exit 1 for
            traceback.print_exc()
            code = 1
        child_atexit._run_exitfuncs()  # as at interpreter exit (logging flushes its handlers)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve_one(req: dict[str, Any], answer) -> None:
    capture = req.get("capture", True)
    out_r, out_w = os.pipe() if capture else (None, None)
    err_r, err_w = os.pipe() if capture else (None, None)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        for fd in (out_r, err_r):
            if fd is not None:
                os.close(fd)
        _child(req, out_w, err_w)
    for fd in (out_w, err_w):
        if fd is not None:
            os.close(fd)
    answer({"pid": pid})
    chunks: dict[int, list[bytes]] = {fd: [] for fd in (out_r, err_r) if fd is not None}
    open_fds = set(chunks)
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
    """The zygote's loop: preload, then one request at a time until stdin closes."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    channel = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers goes down the channel

    def answer(msg: dict[str, Any]) -> None:
        channel.write(json.dumps(msg) + "\n")
        channel.flush()

    answer({"ready": True})
    for line in sys.stdin:
        if line.strip():
            _serve_one(json.loads(line), answer)


# ------------------------------------------------------------------ test side
class Child:
    """A running ``mkd`` child of the zygote (``subprocess.Popen``'s few methods used here)."""

    def __init__(self, zygote: "Zygote", pid: int) -> None:
        self.zygote, self.pid = zygote, pid
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
                self.kill()
                self._finish(self.zygote.read(timeout=60))
                raise subprocess.TimeoutExpired(["mkd"], timeout or 0)
            self._finish(msg)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass

    def _finish(self, msg: dict[str, Any] | None) -> None:
        if msg is not None:
            self.returncode, self.out, self.err = msg["code"], msg["out"], msg["err"]
            self.zygote.busy = False


class Zygote:
    """The test process's zygote, started on first use, stopped when the process exits."""

    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.faults.zygote"], cwd=REPO, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.busy = False
        self._buffer = b""  # answers read but not yet returned (select sees the pipe, not a buffer)
        assert self.read(timeout=300) == {"ready": True}, "the zygote did not start"

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
            assert data, f"the zygote died (exit {self.proc.poll()})"
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def start(self, argv: list[str], cwd: Path, env: dict[str, str], fsize: int | None = None,
              capture: bool = True) -> Child:
        """Fork ``mkd ARGV`` (one child at a time: tests run one after another)."""
        assert not self.busy, "the zygote runs one child at a time"
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "cwd": str(cwd), "env": env, "fsize": fsize,
                                          "capture": capture}).encode() + b"\n")
        msg = self.read(timeout=60)
        assert msg is not None and "pid" in msg, f"the zygote did not fork: {msg}"
        self.busy = True
        return Child(self, msg["pid"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_ZYGOTE: Zygote | None = None


def zygote() -> Zygote:
    """This process's zygote (a new one if there is none or the last one died)."""
    global _ZYGOTE
    if _ZYGOTE is None or _ZYGOTE.proc.poll() is not None or _ZYGOTE.busy:
        if _ZYGOTE is not None:
            _ZYGOTE.close()
        _ZYGOTE = Zygote()
        atexit.register(_ZYGOTE.close)
    return _ZYGOTE


def run_mkd(argv: list[str], cwd: Path, env: dict[str, str], fsize: int | None = None,
            timeout: float = 240) -> tuple[int, str, str]:
    """``mkd ARGV`` in a zygote child to the end: (exit code, stdout, stderr)."""
    child = zygote().start(argv, cwd, env, fsize)
    code = child.wait(timeout=timeout)
    return code, child.out, child.err


if __name__ == "__main__":
    serve()
