"""Run every ``benchmarks/bench_*.py`` in turn with small defaults (``make bench``).

    .venv/bin/python benchmarks/run_all.py [--full] [--only student,data] [--out-dir DIR]

Each script runs in its own process (so one's threads, imports and memory do not
colour the next) from the repository root, with the arguments in ``SMALL_ARGS``
(a few minutes in all on 2 CPU cores); ``--full`` uses each script's own defaults.
A script not listed in ``SMALL_ARGS`` runs with its defaults. The exit status is
non-zero when any benchmark failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

#: script -> arguments that keep ``make bench`` short
SMALL_ARGS: dict[str, list[str]] = {
    "bench_data.py": ["--size", "128", "--crop", "112", "--episodes", "5", "--workers", "0,2"],
    "bench_models.py": ["--size", "64", "--repeat", "1", "--backbones", "mobilenetv3_small"],
    "bench_student.py": ["--tasks", "8", "--load-episodes", "6", "--eval-episodes", "100", "--quiet"],
}

#: scripts that can write their results as JSON with ``--out FILE``
WRITES_JSON = {"bench_student.py"}


def scripts(only: list[str] | None) -> list[Path]:
    found = sorted(HERE.glob("bench_*.py"))
    if not only:
        return found
    wanted = {f"bench_{n.removeprefix('bench_').removesuffix('.py')}.py" for n in only}
    unknown = wanted - {p.name for p in found}
    if unknown:
        raise SystemExit(f"run_all: no benchmark {', '.join(sorted(unknown))} in {HERE}")
    return [p for p in found if p.name in wanted]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="use each script's own defaults instead of the small ones")
    ap.add_argument("--only", default="", help="comma-separated names, e.g. student,data")
    ap.add_argument("--out-dir", type=Path, help="JSON results of the scripts that write them, one file per script")
    args = ap.parse_args(argv)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    summary: list[tuple[str, int, float]] = []
    for script in scripts([n.strip() for n in args.only.split(",") if n.strip()]):
        cmd = [sys.executable, str(script.relative_to(REPO))]
        if not args.full:
            cmd += SMALL_ARGS.get(script.name, [])
        if args.out_dir and script.name in WRITES_JSON:
            cmd += ["--out", str(args.out_dir / f"{script.stem}.json")]
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, check=False, cwd=REPO, env=env).returncode
        summary.append((script.name, rc, time.perf_counter() - t0))
    print("\n=== summary")
    for name, rc, sec in summary:
        print(f"{name:24s} {'ok' if rc == 0 else f'FAILED (exit {rc})':16s} {sec:7.1f} s")
    return 0 if all(rc == 0 for _, rc, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
