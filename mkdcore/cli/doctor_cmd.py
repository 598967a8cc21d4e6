"""``mkd doctor``: can this machine run mkd jobs? Exit code 0 means yes."""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from importlib.metadata import distributions
from typing import Any

import click

#: mkd's own distribution name (pyproject.toml), which plugin packages depend on
MKD_DISTRIBUTION = "lite-mkd"
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _check(name: str, fn) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as exc:  # doctor must report, never crash
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return {"check": name, "ok": ok, "detail": detail, "seconds": round(time.perf_counter() - start, 3)}


def _python():
    ok = sys.version_info >= (3, 11)
    return ok, f"{platform.python_version()} ({sys.executable})"


def _torch():
    import torch

    return True, f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"


def _cuda():
    # Runs in the doctor process only; workers never touch CUDA in their parent.
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        return True, "no CUDA device (CPU only)"
    names = [torch.cuda.get_device_name(i) for i in range(n)]
    return True, f"{n} device(s): {', '.join(names)}"


def _timm():
    import timm

    return True, f"timm {timm.__version__}, HF_HUB_OFFLINE={os.environ.get('HF_HUB_OFFLINE', 'unset')}"


def _redis():
    from mkdcore.jobs.broker import broker_url, ping_redis, redact

    url = broker_url()
    ping_redis(url, timeout=1.0)
    return True, f"reachable at {redact(url)}"


def _plugins():
    """Fails when nothing is registered or a plugin failed to load: a broken plugin is
    skipped by every command, so a config that needs it fails later, far from the cause."""
    from mkdcore.plugins import get_manager

    manager = get_manager()
    specs = manager.list_plugins()
    kinds: dict[str, int] = {}
    for s in specs:
        kinds[s.kind] = kinds.get(s.kind, 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "no plugins loaded"
    if manager.broken:
        detail += "; failed to load: " + ", ".join(b.describe() for b in manager.broken.values())
    if manager.disabled:
        detail += f"; disabled by MKD_DISABLE_PLUGINS: {', '.join(manager.disabled)}"
    return len(specs) > 0 and not manager.broken, detail


def _canonical(name: str) -> str:
    """PEP 503 normalised distribution name (``Lite_MKD`` -> ``lite-mkd``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _needs_mkd(requirement: str) -> bool:
    """True for a Requires-Dist line naming lite-mkd unconditionally (an optional extra,
    ``; extra == "mkd"``, is an integration the package may not register anything for)."""
    match = _REQUIREMENT_NAME.match(requirement)
    marker = requirement.partition(";")[2]
    return bool(match) and _canonical(match.group(1)) == MKD_DISTRIBUTION and "extra" not in marker


def silent_plugin_packages() -> list[str]:
    """Installed distributions that depend on lite-mkd but register nothing in the ``mkd``
    entry-point group, one description each (name, version, the groups they do use).

    Such a package is almost always a plugin whose ``pyproject.toml`` misspells the group
    (``[project.entry-points.mdk]``): mkd never sees it and no command says why.
    """
    from mkdcore.plugins import ENTRY_POINT_GROUP

    found: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"] or ""
        key = _canonical(name)
        if not name or key == MKD_DISTRIBUTION or key in found or not any(_needs_mkd(r) for r in dist.requires or []):
            continue
        groups = sorted({ep.group for ep in dist.entry_points})
        if ENTRY_POINT_GROUP in groups:
            continue
        has = f"its entry points are in {', '.join(repr(g) for g in groups)}" if groups else "it has no entry points"
        found[key] = f"{name} {dist.version} ({has})"
    return list(found.values())


def _plugin_packages():
    """Warns about packages that look like plugins but cannot be seen (see above)."""
    from mkdcore.plugins import ENTRY_POINT_GROUP

    silent = silent_plugin_packages()
    if not silent:
        return True, f"every installed package that depends on {MKD_DISTRIBUTION} registers {ENTRY_POINT_GROUP!r} entry points"
    return False, (f"{len(silent)} package(s) depend on {MKD_DISTRIBUTION} but register nothing in the "
                   f"{ENTRY_POINT_GROUP!r} entry-point group, so mkd does not see them: {'; '.join(silent)}. "
                   f"A plugin declares [project.entry-points.{ENTRY_POINT_GROUP}] in its pyproject.toml "
                   "(is the group name misspelt?), then is reinstalled")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(as_json: bool) -> None:
    """Check python, torch, CUDA, timm, Redis, plugins and plugin packages.

    ``packages`` warns about installed packages that depend on lite-mkd but register
    nothing in the ``mkd`` entry-point group (a misspelt group hides a plugin silently).

    Exit code 0: jobs can run in-process (`mkd run`); Redis is needed only for the
    queue, so its absence is reported but fails only with --require-redis semantics
    of `mkd submit`.
    """
    import json

    checks = [
        _check("python", _python),
        _check("torch", _torch),
        _check("cuda", _cuda),
        _check("timm", _timm),
        _check("plugins", _plugins),
        _check("packages", _plugin_packages),
        _check("redis", _redis),
    ]
    required = {"python", "torch", "timm", "plugins"}
    ok = all(c["ok"] for c in checks if c["check"] in required)
    queue_ok = ok and all(c["ok"] for c in checks if c["check"] == "redis")
    if as_json:
        click.echo(json.dumps({"ok": ok, "queue_ok": queue_ok, "checks": checks}, indent=2))
    else:
        for c in checks:
            mark = "ok  " if c["ok"] else ("FAIL" if c["check"] in required else "warn")
            click.echo(f"[{mark}] {c['check']:8s} {c['detail']}")
        click.echo("ready: mkd run" + (" and the queue (mkd submit)" if queue_ok else "; queue unavailable (start Redis or run `mkd up`)") if ok else "not ready")
    raise SystemExit(0 if ok else 1)
