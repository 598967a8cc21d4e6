"""Who a PID is: start time and command line, so a recorded PID is not trusted blindly.

PIDs are reused. A PID written to a file (``mkd up``'s state file, a worker's task file)
may, after a crash or a reboot, belong to an unrelated process; signalling it or taking
it for "our worker is still alive" would be wrong. A process is identified by its PID
*and* its start time (``/proc/<pid>/stat`` field 22, clock ticks since boot), which no two
processes share; the command line is a second check and a readable hint in warnings.
"""

from __future__ import annotations

import os
from typing import Any


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it does not exist."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except (OSError, ValueError):
        return None
    fields = stat.rpartition(")")[2].split()  # the command name may contain spaces and ')'
    try:
        return int(fields[19])  # field 22; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def cmdline(pid: int) -> list[str] | None:
    """The command line of ``pid`` (None if it does not exist or is a zombie/kernel thread)."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as fh:
            raw = fh.read()
    except (OSError, ValueError):
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]] or None


def identity(pid: int) -> dict[str, Any]:
    """What to record beside a PID to recognise the process later."""
    return {"pid": pid, "start": start_time(pid), "cmdline": cmdline(pid)}


def same_process(record: dict[str, Any]) -> bool:
    """Whether the recorded process (``pid``, ``start``, optional ``cmdline``) still runs.

    False when the PID is gone or now belongs to another process (different start time or
    command line). A record without a start time cannot be verified: False.
    """
    pid, start = record.get("pid"), record.get("start")
    if not pid or start is None or start_time(pid) != start:
        return False
    recorded = record.get("cmdline")
    return recorded is None or cmdline(pid) == list(recorded)


def describe(pid: int) -> str:
    """A short description of what ``pid`` is now (for one-line warnings)."""
    argv = cmdline(pid)
    if argv is None:
        return "no such process" if start_time(pid) is None else "a process without a command line"
    text = " ".join(argv)
    return text if len(text) <= 80 else text[:77] + "..."


def me() -> dict[str, Any]:
    """This process's identity."""
    return identity(os.getpid())
