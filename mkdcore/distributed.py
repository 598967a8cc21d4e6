"""Data-parallel stages: N ranks (torch.distributed) that together do what one process does.

Why by hand and not ``DistributedDataParallel``: the engine accumulates ``tasks_per_batch``
per-task losses (several backward passes) into one optimiser step *without dividing
again*; DDP averages over ranks and all-reduces on every backward. Here each rank runs
its contiguous share of the step's tasks, the gradients are summed once per step
(:func:`all_reduce_grads`: exactly the single-process accumulation), and BatchNorm
running statistics are combined as if the tasks had run one after another
(:func:`sync_batchnorm`). A task's episode and its model randomness are pure functions of
``(seed, task)``, so the split does not change what a task computes.

Launch: :func:`launch` starts N processes with ``torch.multiprocessing``'s spawn context
from the process that runs the stage (``mkd run`` or the queue's child), so ``mkd run
--devices N`` stays one command. The parent hosts the rendezvous store, forwards SIGTERM,
and turns a failed rank into one error (the others are stopped). NCCL on CUDA (rank r on
``cuda:r`` of the visible devices), gloo on CPU. Rank 0 alone writes files.
"""

from __future__ import annotations

import datetime
import gc
import importlib
import multiprocessing.connection
import os
import pickle
import signal
import traceback
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar

from mkdcore import settings
from mkdcore.errors import ConfigError, MkdError, Terminated, TrainingError

if TYPE_CHECKING:
    import torch

    from mkdcore.stages.base import StageContext

T = TypeVar("T")

#: stage kinds that run on ``runtime.devices`` ranks (training and evaluation); every
#: other stage runs in the calling process
RANKED_KINDS = frozenset({"teacher", "fuse", "student", "evaluate"})

#: seconds the other ranks get to report after one failed, before they are killed
#: (a dead peer leaves them blocked in a collective)
_GRACE_S = 10.0

#: set by a SIGTERM that arrives in a rank before the engine listens for it (imports,
#: model building); the engine starts its run with the request already pending
_term_pending = False


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a stage (``Ranks(0, 1)``: not distributed)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes checkpoints, metrics, progress and outputs."""
        return self.rank == 0


def current() -> Ranks:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def is_main() -> bool:
    return current().main


def term_pending() -> bool:
    """A SIGTERM reached this rank before the engine installed its handler."""
    return _term_pending


# ------------------------------------------------------------------ splitting work
def split_range(start: int, stop: int, rank: int, world: int) -> range:
    """Rank ``rank``'s contiguous share of ``start..stop-1`` (sizes differ by at most one,
    the first ranks take the extra): concatenated in rank order, the shares are the range."""
    n = stop - start
    base, extra = divmod(n, world)
    lo = start + rank * base + min(rank, extra)
    return range(lo, lo + base + (1 if rank < extra else 0))


def step_tasks(task: int, tasks: int, per_batch: int) -> range:
    """The tasks of the optimiser step that starts at ``task`` (the last one may be short)."""
    return range(task, min(task + per_batch, tasks))


def rank_tasks(tasks: int, per_batch: int, ranks: Ranks) -> list[int]:
    """Every task this rank runs, in order: its share of each optimiser step."""
    out: list[int] = []
    for start in range(0, tasks, per_batch):
        out.extend(split_range(start, min(start + per_batch, tasks), ranks.rank, ranks.world))
    return out


def check_divisible(per_batch: int, devices: int, field: str) -> None:
    """One line when the tasks of a step cannot be split evenly over the ranks."""
    if per_batch % devices:
        raise ConfigError(f"{field} = {per_batch} is not divisible by runtime.devices = {devices} "
                          f"(each rank runs tasks_per_batch / devices tasks per optimiser step)")


def shard(items: Sequence[T]) -> list[T]:
    """This rank's contiguous share of ``items`` (all of them when not distributed)."""
    r = current()
    return list(items[i] for i in split_range(0, len(items), r.rank, r.world))


def gather_lists(items: list[T]) -> list[T]:
    """Every rank's ``items`` concatenated in rank order, on every rank: the inverse of
    :func:`shard`, so sharded results come back in the original order."""
    r = current()
    if r.world == 1:
        return list(items)
    import torch.distributed as dist

    parts: list[Any] = [None] * r.world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def gather_objects(obj: T) -> list[T]:
    """``obj`` of every rank, in rank order (``[obj]`` when not distributed)."""
    r = current()
    if r.world == 1:
        return [obj]
    import torch.distributed as dist

    parts: list[Any] = [None] * r.world
    dist.all_gather_object(parts, obj)
    return parts


# ------------------------------------------------------------------ model state
def broadcast_module(module: "torch.nn.Module") -> None:
    """Rank 0's parameters and buffers on every rank (an identical start is then a fact,
    not a consequence of every rank seeding alike)."""
    if current().world == 1:
        return
    import torch.distributed as dist

    for t in list(module.parameters()) + list(module.buffers()):
        dist.broadcast(t.data, src=0)


def all_reduce_grads(params: Iterable["torch.nn.Parameter"]) -> None:
    """Sum the gradients over the ranks, in one collective per dtype.

    A parameter that got no gradient on any rank keeps ``grad = None`` (the optimiser
    skips it, as in one process); one that got a gradient on some rank gets the sum."""
    import torch
    import torch.distributed as dist

    if current().world == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
    for p in params:
        by_dtype.setdefault(p.dtype, []).append(p)
    for dtype, ps in sorted(by_dtype.items(), key=lambda kv: str(kv[0])):
        device = ps[0].device
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in ps]
                         + [torch.tensor([float(p.grad is not None) for p in ps], dtype=dtype, device=device)])
        dist.all_reduce(flat)
        offset = 0
        sizes = [p.numel() for p in ps]
        has = flat[sum(sizes):]
        for i, p in enumerate(ps):
            chunk = flat[offset : offset + sizes[i]].view_as(p)
            offset += sizes[i]
            if has[i] > 0:
                if p.grad is None:
                    p.grad = chunk.clone()
                else:
                    p.grad.copy_(chunk)


def _batchnorms(module: "torch.nn.Module") -> list["torch.nn.modules.batchnorm._BatchNorm"]:
    from torch.nn.modules.batchnorm import _BatchNorm

    return [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def snapshot_batchnorm(module: "torch.nn.Module") -> list[tuple[Any, Any, int]]:
    """Running statistics of every BatchNorm at the start of an optimiser step."""
    return [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked)) for m in _batchnorms(module)]


def sync_batchnorm(module: "torch.nn.Module", before: list[tuple[Any, Any, int]]) -> None:
    """BatchNorm running statistics as if the ranks' tasks had run one after another.

    In training mode each task's forward normalises with its own batch statistics (the
    same on any rank), but each forward also moves the running statistics:
    ``r <- (1-m) r + m x``. Rank ``q`` made ``k_q`` such updates (its
    ``num_batches_tracked`` delta) from the common start ``r0``; the update is affine, so
    the sequential result is rebuilt exactly (float64) from every rank's end state:
    ``r <- (1-m)^k_q r + (r_q - (1-m)^k_q r0)`` in rank order (task order). With
    ``momentum=None`` (cumulative average) the per-rank sums are added instead."""
    import torch

    bns = _batchnorms(module)
    if current().world == 1 or not bns:
        return
    device = bns[0].running_mean.device
    mine = torch.cat([torch.cat([m.running_mean.double(), m.running_var.double(),
                                 torch.tensor([float(m.num_batches_tracked)], dtype=torch.float64, device=m.running_mean.device)]).to(device)
                      for m in bns])
    import torch.distributed as dist

    parts = [torch.empty_like(mine) for _ in range(current().world)]
    dist.all_gather(parts, mine)
    offset = 0
    for m, (r0_mean, r0_var, n0) in zip(bns, before):
        c = m.running_mean.numel()
        cur_mean, cur_var, cur_n = r0_mean.double().to(device), r0_var.double().to(device), float(n0)
        for part in parts:
            x_mean, x_var = part[offset : offset + c], part[offset + c : offset + 2 * c]
            k = float(part[offset + 2 * c]) - n0
            if k <= 0:
                continue
            if m.momentum is None:  # cumulative average: add this rank's sums of batch statistics
                cur_mean = (cur_mean * cur_n + x_mean * (n0 + k) - r0_mean.double().to(device) * n0) / (cur_n + k)
                cur_var = (cur_var * cur_n + x_var * (n0 + k) - r0_var.double().to(device) * n0) / (cur_n + k)
            else:
                decay = (1.0 - m.momentum) ** k
                cur_mean = decay * cur_mean + (x_mean - decay * r0_mean.double().to(device))
                cur_var = decay * cur_var + (x_var - decay * r0_var.double().to(device))
            cur_n += k
        m.running_mean.copy_(cur_mean.to(m.running_mean.dtype))
        m.running_var.copy_(cur_var.to(m.running_var.dtype))
        m.num_batches_tracked.fill_(int(cur_n))
        offset += 2 * c + 1


# ------------------------------------------------------------------ launching
def rank_device(spec: "torch.device", rank: int) -> "torch.device":
    """Rank ``r`` on ``cuda:r`` of the visible devices, or on the CPU."""
    import torch

    return torch.device("cuda", rank) if spec.type == "cuda" else torch.device("cpu")


def check_devices(device: "torch.device", devices: int) -> None:
    import torch

    if device.type == "cuda" and torch.cuda.device_count() < devices:
        raise ConfigError(f"runtime.devices = {devices} but only {torch.cuda.device_count()} CUDA device(s) are "
                          f"visible (CUDA_VISIBLE_DEVICES)")


def _on_sigterm(signum: int, frame: Any) -> None:
    global _term_pending
    _term_pending = True


def _report(conn: multiprocessing.connection.Connection, message: tuple[str, Any]) -> None:
    """Plain pickle, not torch's shared-memory reductions: the parent reads the message
    after this process has exited."""
    conn.send_bytes(pickle.dumps(message))


def _rank_main(rank: int, world: int, port: int, device_type: str, threads: int, fn: Callable[..., Any],
               args: tuple[Any, ...], conn: multiprocessing.connection.Connection) -> None:
    """One rank: join the group, run ``fn(*args)``, report to the parent, leave."""
    signal.signal(signal.SIGTERM, _on_sigterm)  # checkpoint, not die, if cancelled during start-up
    if rank != 0:
        os.environ.pop(settings.PROGRESS_FILE.name, None)  # rank 0 alone reports progress
    import torch
    import torch.distributed as dist


    torch.set_num_threads(threads)
    if device_type == "cuda":
        torch.cuda.set_device(rank)
    try:
        store = dist.TCPStore("127.0.0.1", port, world, False, datetime.timedelta(minutes=5))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", store=store, rank=rank, world_size=world,
                                timeout=datetime.timedelta(minutes=30))
        result = fn(*args)
        _report(conn, ("ok", result if rank == 0 else None))
    except Terminated as exc:
        _report(conn, ("terminated", (str(exc), exc.exit_code)))
    except MkdError as exc:
        _report(conn, ("error", exc))
    except BaseException as exc:  # a bug: the parent re-raises it with this traceback
        _report(conn, ("crash", f"{type(exc).__name__}: {exc}\n" + "".join(traceback.format_exception(exc))))
    finally:
        conn.close()
        if dist.is_initialized():
            dist.destroy_process_group()
        # Reported, and rank 0's files are written: what is left is the interpreter's
        # shutdown, whose full garbage collections over the objects of torch._dynamo (which
        # torch.optim imports) and sympy cost ~1 s of CPU per rank. Frozen objects are skipped.
        gc.freeze()


def launch(fn: Callable[..., T], args: tuple[Any, ...], world: int, device: "torch.device",
           threads: int | None = None) -> T:
    """Run ``fn(*args)`` on ``world`` ranks (spawned processes); returns rank 0's result.

    ``fn`` and ``args`` must pickle (a module-level function). ``threads``: torch CPU
    threads per rank (default: this machine's cores split over the ranks). A rank that
    raises :class:`~mkdcore.errors.Terminated` makes this raise it (exit 143 in ``mkd
    run``); an :class:`MkdError` is re-raised as is; a rank that crashes or dies stops the
    others and raises one error naming it."""
    import torch.distributed as dist
    import torch.multiprocessing as mp


    if threads is None:
        threads = max(1, len(os.sched_getaffinity(0)) // world)
    ctx = mp.get_context("spawn")
    store = dist.TCPStore("127.0.0.1", 0, None, True, datetime.timedelta(minutes=5), wait_for_workers=False)
    procs: list[Any] = []
    conns: list[Any] = []
    stopped_by: dict[str, int | None] = {"signum": None}

    def forward(signum: int, frame: Any) -> None:
        """SIGTERM, or a first Ctrl-C: every rank is asked to stop at its step's end (as a
        SIGTERM: a rank that also got the terminal's Ctrl-C sees one request, not the two
        Ctrl-C that abort); a second Ctrl-C raises KeyboardInterrupt here (ranks killed)."""
        if signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        stopped_by["signum"] = stopped_by["signum"] or signum
        for p in procs:
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)

    previous: dict[int, Any] = {}
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, forward)
    except ValueError:  # not the main thread
        previous = {}
    reports: dict[int, tuple[str, Any]] = {}
    try:
        for rank in range(world):
            parent_end, child_end = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_rank_main, name=f"mkd-rank{rank}",
                            args=(rank, world, store.port, device.type, threads, fn, args, child_end))
            p.start()
            child_end.close()
            procs.append(p)
            conns.append(parent_end)
        reports = _collect(procs, conns)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
        del store
    return _outcome(reports, procs, stopped_by["signum"], Terminated)  # type: ignore[return-value]


def _collect(procs: list[Any], conns: list[Any]) -> dict[int, tuple[str, Any]]:
    """Each rank's report; once one rank fails, the rest get :data:`_GRACE_S` seconds."""
    reports: dict[int, tuple[str, Any]] = {}
    alive = set(range(len(procs)))
    deadline: float | None = None
    import time

    while alive:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        waitables = [conns[r] for r in alive if r not in reports] + [procs[r].sentinel for r in alive]
        ready = multiprocessing.connection.wait(waitables, timeout)
        if not ready:  # grace over: the survivors are stuck in a collective
            for r in alive:
                procs[r].kill()
            deadline = time.monotonic() + _GRACE_S
        for r in list(alive):
            if r not in reports and conns[r] in ready:
                try:
                    reports[r] = pickle.loads(conns[r].recv_bytes())
                except (EOFError, OSError):
                    reports[r] = ("died", None)
            if procs[r].sentinel in ready:
                procs[r].join()
                alive.discard(r)
                if r not in reports:
                    reports[r] = ("died", procs[r].exitcode)
        if deadline is None and any(kind != "ok" for kind, _ in reports.values()):
            deadline = time.monotonic() + _GRACE_S
    return reports


def _outcome(reports: dict[int, tuple[str, Any]], procs: list[Any], stopped_by: int | None,
             terminated: type[Terminated]) -> Any:
    """One result or one error for the whole group. The cause comes first: a user error
    (raised alike on every rank), then a stop request (``stopped_by``: the signal the
    launcher got, which sets the exit code), then a rank that died (its peers then fail
    in a collective), then the first crash to arrive (a bug; its traceback is kept)."""
    if all(kind == "ok" for kind, _ in reports.values()):
        return reports[0][1]
    arrived = list(reports.items())  # dicts keep arrival order
    for rank, (kind, payload) in arrived:
        if kind == "error":
            raise payload
    for rank, (kind, payload) in arrived:
        if kind == "terminated":
            message, code = payload
            raise terminated(message, exit_code=128 + stopped_by if stopped_by else code)
    if stopped_by:
        raise terminated(f"stopped by {signal.Signals(stopped_by).name} before training started",
                         exit_code=128 + stopped_by)
    for rank, (kind, payload) in arrived:
        if kind == "died":
            code = procs[rank].exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise TrainingError(f"rank {rank} of {len(procs)} died ({how}); run the stage again to resume it "
                                f"from its last checkpoint")
    rank, (_, payload) = next((r, rep) for r, rep in arrived if rep[0] == "crash")
    raise RuntimeError(f"rank {rank} of {len(procs)} failed: {payload}")


def _stage_entry(ctx: "StageContext", target: str) -> dict[str, Any]:
    """A rank's body for a stage: the stage function on this rank's device."""
    module, _, attr = target.partition(":")
    fn = getattr(importlib.import_module(module), attr)
    return fn(replace(ctx, device=rank_device(ctx.device, current().rank)))


def run_stage(ctx: "StageContext", target: str, here: Callable[["StageContext"], dict[str, Any]]) -> dict[str, Any]:
    """Run a stage on ``runtime.devices`` ranks, each importing the stage function
    ``target`` (``"module:function"``), when it is a training or evaluation stage; else
    ``here(ctx)`` (the same function) in this process."""
    devices = ctx.cfg.runtime.devices
    if devices <= 1 or ctx.node.kind not in RANKED_KINDS:
        return here(ctx)
    check_devices(ctx.device, devices)
    return launch(_stage_entry, (ctx, target), devices, ctx.device, ctx.cfg.runtime.threads)
