"""``mkd status [JOB]``: workers, jobs and queue depth, from files and one Redis LLEN.

It never waits on a worker (no ``inspect``), so it answers in about a second even when
workers are busy or gone; a silent worker is shown as ``unknown``.
"""

from __future__ import annotations

import json
import time

import click


def _fmt_age(s: float | None) -> str:
    if s is None:
        return "-"
    s = float(s)
    return f"{s:.0f}s" if s < 120 else (f"{s / 60:.0f}m" if s < 7200 else f"{s / 3600:.1f}h")


def _num(v, fmt: str = "{:.4g}") -> str:
    return "-" if v is None else fmt.format(v)


def _gpus(row: dict) -> str:
    """A worker's GPUs, one line each: ``0 NVIDIA H100 45% 1234/81559 MiB``, or ``2 n/a``
    where NVML gave nothing (no driver); ``-`` for a CPU worker."""
    lines = []
    for g in row["gpus"]:
        if g["utilization_pct"] == "n/a" and g["memory_total_mib"] == "n/a":
            lines.append(f"{g['index']} n/a")
        else:
            lines.append(f"{g['index']} {g['name']} {g['utilization_pct']}% {g['memory_used_mib']}/{g['memory_total_mib']} MiB")
    return "\n".join(lines) or "-"


def render(data: dict, one_job: bool) -> None:
    """Tables for a terminal. Every value that comes from a user or a file (job names such
    as ``smoke[seed=1]``, stage names, messages) is shown verbatim, never read as markup."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(width=140)
    if one_job:
        d = data
        console.print(f"[bold]{escape(d['id'])}[/]  {escape(d['name'])}  state [bold]{d['state']}[/]"
                      + (f"  (worker {escape(d['worker'])}: {d['worker_state']})" if d["worker"] else "")
                      + (f"  group {escape(d['group'])}" if d["group"] else ""))
        t = Table("stage", "state", "attempts", "worker", "step", "loss", "val acc", "note")
        for s in d["stages"]:
            step = f"{s['step']}/{s['total']}" if s["step"] is not None else "-"
            attempts = str(s["attempts"]) + (f" (+{s['preempted']} preempted)" if s["preempted"] else "")
            t.add_row(escape(s["name"]), s["state"] + (" (cached)" if s["cached"] else ""), attempts, escape(s["worker"] or "-"),
                      step, _num(s["loss"]), _num(s["val_acc"], "{:.3f}"), escape((s["message"] or "")[:60]))
        console.print(t)
        return
    w = Table("worker", "state", "dev", "GPU  util  memory", "threads", "job", "stage", "heartbeat", title="workers")
    for r in data["workers"]:
        w.add_row(escape(r["node"]), r["state"], str(r["devices"]), escape(_gpus(r)), str(r["threads"] or "-"),
                  escape(r["job"] or "-"), escape(r["stage"] or "-"), _fmt_age(r["heartbeat_age_s"]))
    console.print(w if data["workers"] else "workers: none has reported (start one: `mkd worker` or `mkd up`)")
    # tries: retries (starts beyond each stage's first), so a clean job shows 0 whatever its size
    j = Table("job", "name", "group", "state", "stage", "step", "loss", "val acc", "ETA", "tries", title="jobs")
    for r in data["jobs"]:
        state = r["state"] + (" (worker unknown)" if r["worker_state"] == "unknown" else "")
        step = f"{r['step']}/{r['total']}" if r["step"] is not None else "-"
        j.add_row(escape(r["id"]), escape(r["name"]), escape(r["group"] or "-"), state, escape(r["stage"] or "-"), step,
                  _num(r["loss"]), _num(r["val_acc"], "{:.3f}"), _fmt_age(r["eta_s"]) if r["state"] == "running" else "-",
                  str(r["retries"]))
    console.print(j if data["jobs"] else escape(f"jobs: none in {data['runs_dir']}"))
    for bad in data["corrupt"]:  # one line each, never hiding the readable jobs
        console.print(f"job {bad['id']}: corrupt: {bad['error']}", markup=False, soft_wrap=True)
    q = data["queue"]
    console.print("queue: " + (", ".join(f"{k} {v} waiting" for k, v in q.items()) if isinstance(q, dict) else q), markup=False)


@click.command()
@click.argument("job", required=False)
@click.option("--watch", is_flag=True, help="Refresh every --interval seconds until Ctrl-C.")
@click.option("--interval", default=2.0, show_default=True, type=float)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (for one job: an object with `state`).")
@click.option("--runs-dir", type=click.Path(file_okay=False), default=None, help="Default MKD_RUNS_DIR or ./runs.")
@click.option("--limit", default=50, show_default=True, help="Most recent jobs to list.")
def status(job: str | None, watch: bool, interval: float, as_json: bool, runs_dir: str | None, limit: int) -> None:
    """Show workers, jobs (state, stage, step, loss, accuracy, ETA) and queue depth."""
    from mkdcore.jobs.broker import broker_url
    from mkdcore.jobs.status import collect
    from mkdcore.jobs.store import JobStore, default_runs_dir

    store = JobStore(runs_dir or default_runs_dir())
    url = broker_url()
    while True:
        data = collect(store, url, job_id=job, limit=limit)
        if as_json:
            click.echo(json.dumps(data, indent=1, default=str))
        else:
            if watch:
                click.clear()
            render(data, one_job=job is not None)
        if not watch:
            return
        try:
            time.sleep(interval)
        except KeyboardInterrupt:
            return
