"""Sweep grids: ``--sweep KEY=V1,V2`` into member configs, labels and run folders.

One module for ``mkd run --sweep`` (members run one after another in-process) and
``mkd submit --sweep`` (members queued as jobs of one group), so both give a grid point
the same label (``smoke[seed=1]``) and the same ``runs/<name>-<label>/`` folder.

Values are split on top-level commas only, so list values work: ``x=[2],[2,3]`` is two
values. A label names each swept key by the shortest dotted suffix that tells the keys
of the grid apart (``seed`` alone, ``training.seed`` and ``evaluation.seed`` together).
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mkdcore.config import (
    ExperimentConfig,
    apply_overrides,
    config_from_dict,
    parse_override,
    resolve_config,
)
from mkdcore.errors import ConfigError
from mkdcore.names import sweep_member_name

_OPEN, _CLOSE = "[{(", "]})"


def split_values(raw: str, where: str) -> list[str]:
    """``"1,2"`` -> ``["1", "2"]``; ``"[2],[2,3]"`` -> ``["[2]", "[2,3]"]`` (commas inside
    brackets, braces or quotes stay in their value)."""
    values, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(raw):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{where}: unbalanced {ch!r}")
        elif ch == "," and depth == 0:
            values.append(raw[start:i])
            start = i + 1
    if depth or quote:
        raise ConfigError(f"{where}: unbalanced brackets or quotes")
    values.append(raw[start:])
    return [v.strip() for v in values if v.strip()]


def sweep_axes(sweeps: list[str] | tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """``["a.b=1,2"]`` -> ``[("a.b", ["1", "2"])]``, each key once, each value once."""
    axes: list[tuple[str, list[str]]] = []
    for item in sweeps:
        path, _ = parse_override(item)  # validates KEY=...
        key, raw = ".".join(path), item.partition("=")[2]
        values = split_values(raw, f"--sweep {item!r}")
        if not values:
            raise ConfigError(f"--sweep {item!r}: no values (expected KEY=V1,V2,...)")
        if len(set(values)) != len(values):
            raise ConfigError(f"--sweep {item!r}: a value is listed twice")
        if key in (k for k, _ in axes):
            raise ConfigError(f"--sweep {item!r}: {key} is swept twice; give its values in one --sweep")
        axes.append((key, values))
    return axes


def sweep_grid(sweeps: list[str] | tuple[str, ...]) -> list[list[str]]:
    """``["a.b=1,2", "c=x,y"]`` -> the overrides of every grid point (cartesian product)."""
    axes = sweep_axes(sweeps)
    options = [[f"{key}={v}" for v in values] for key, values in axes]
    return [list(point) for point in itertools.product(*options)]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key -> its shortest suffix that no other key of the grid ends with."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(o != key and (o == suffix or o.endswith("." + suffix)) for o in keys):
                break
        out[key] = suffix
    return out


def point_label(point: list[str], short: dict[str, str]) -> str:
    """``["training.seed=1", "episodes.shot=5"]`` -> ``seed=1,shot=5``."""
    return ",".join(f"{short[k]}={v}" for k, _, v in (p.partition("=") for p in point))


@dataclass
class Member:
    """One experiment of a sweep (or the only one): its overrides, config and names."""

    label: str  # "" for a plain run; shown as name[label]
    data: dict[str, Any]
    cfg: ExperimentConfig
    run_name: str = ""  # the experiment's runs/<run_name>/ folder; default: sanitised name-label

    def __post_init__(self) -> None:
        if not self.run_name:
            self.run_name = sweep_member_name(self.cfg.name, self.label) if self.label else self.cfg.name


def member_names(members: list[tuple[str, str]]) -> list[str]:
    """``runs/<name>-<label>`` for every (name, label); labels whose folder names would
    collide after sanitising (``x=a/b`` and ``x=a_b``) get a short hash of the label."""
    names = [sweep_member_name(name, label) if label else name for name, label in members]
    for i, (name, label) in enumerate(members):
        if names.count(names[i]) > 1 and label:
            digest = hashlib.sha256(label.encode()).hexdigest()[:6]
            names[i] = sweep_member_name(name, f"{label}-{digest}")
    return names


def load_members(config: str | Path | None, overrides: list[str], sweeps: list[str],
                 check_plugins: bool = True) -> list[Member]:
    """Read (``base:`` files merged), override and validate every member config."""
    base = resolve_config(config, list(overrides)).data
    source = str(config) if config is not None else "<defaults>"
    short = short_keys([key for key, _ in sweep_axes(sweeps)])
    points = sweep_grid(sweeps) if sweeps else [[]]
    loaded = []
    for point in points:
        data = apply_overrides(base, point)
        label = point_label(point, short)
        cfg = config_from_dict(data, f"{source}[{label}]" if label else source, check_plugins=check_plugins)
        loaded.append((label, data, cfg))
    runs = member_names([(cfg.name, label) for label, _, cfg in loaded])
    return [Member(label, data, cfg, run) for (label, data, cfg), run in zip(loaded, runs)]


def member_config(member: Member, group: str | None) -> ExperimentConfig:
    """The config a member runs with: its own ``runs/<run_name>/`` folder, tagged with the group."""
    update: dict[str, Any] = {"name": member.run_name}
    if group is not None:
        update["group"] = group
    return member.cfg.model_copy(update=update)
