"""Config files on disk: YAML reading and ``base:`` inheritance, before any validation.

A config may name ``base: other.yaml`` (relative to the file naming it) or a list of
bases; bases are resolved first, in order, then the file itself is merged on top.
Mappings merge key by key, everything else (lists, scalars, ``null``) replaces, so a
delta can change ``student.backbone.name`` without restating its options, and a list
such as ``modalities.names`` is always stated whole. Pydantic validates only the merged
result, so an inherited config fails exactly like a flat one would.

Alongside the merged mapping the resolver records which file set every leaf
(:class:`Resolved.origins`), which is what ``mkd config show --origin`` prints.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mkdcore.errors import ConfigError
from mkdcore.fileio import read_text

#: the key that names a config's parent file(s); removed from the merged mapping
BASE_KEY = "base"

KeyPath = tuple[str, ...]


@dataclass
class Resolved:
    """A config file with its bases merged in, and the file that set each leaf."""

    data: dict[str, Any]
    origins: dict[KeyPath, str] = field(default_factory=dict)

    def origin(self, path: KeyPath) -> str | None:
        """The file that set ``path`` or the nearest enclosing value (a mapping or list set whole)."""
        for end in range(len(path), 0, -1):
            found = self.origins.get(path[:end])
            if found is not None:
                return found
        return None


def read_yaml(path: Path) -> dict[str, Any]:
    """One YAML file as a mapping; unreadable, invalid or non-mapping files are one line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = read_text(path, "config file", "save it as UTF-8 text")  # not UTF-8: one line, no traceback
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)  # PyYAML's own exception attributes
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where} invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def deep_merge(into: dict[str, Any], top: dict[str, Any], origins: dict[KeyPath, str] | None = None,
               source: str = "", prefix: KeyPath = ()) -> dict[str, Any]:
    """Merge ``top`` onto ``into`` in place (mappings merge, all else replaces), recording
    ``source`` as the origin of every leaf ``top`` sets."""
    for key, value in top.items():
        path = (*prefix, str(key))
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value, origins, source, path)
            continue
        into[key] = copy.deepcopy(value)
        if origins is not None:
            for old in [p for p in origins if p[: len(path)] == path]:
                del origins[old]  # a replaced subtree forgets where its old leaves came from
            _record(value, origins, source, path)
    return into


def _record(value: Any, origins: dict[KeyPath, str], source: str, path: KeyPath) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _record(child, origins, source, (*path, str(key)))
    else:
        origins[path] = source


def _bases(data: dict[str, Any], path: str) -> list[str]:
    raw = data.pop(BASE_KEY, None)
    if raw is None:
        return []
    names = raw if isinstance(raw, list) else [raw]
    if not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise ConfigError(f"{path}: base: expected a file name or a list of file names, got {raw!r}")
    return [n.strip() for n in names]


def _beside(path: str, name: str) -> str:
    """``name`` relative to the folder of ``path`` (as a display string, ``./`` dropped)."""
    parent = Path(path).parent
    return name if parent == Path(".") or Path(name).is_absolute() else str(parent / name)


def resolve_file(path: str | Path, _chain: tuple[Path, ...] = ()) -> Resolved:
    """``path`` with its bases merged in (depth first, left to right, the file last).

    Files are named as the user typed the top one, bases relative to it, in origins and
    errors. A cycle or a missing base is one ConfigError naming the files involved.
    """
    shown = str(path)
    real = Path(path).resolve()
    if real in _chain:
        chain = " -> ".join(str(p) for p in (*_chain, real))
        raise ConfigError(f"{shown}: config bases form a cycle: {chain}")
    data = read_yaml(Path(path))
    merged = Resolved(data={})
    for name in _bases(data, shown):
        base = _beside(shown, name)
        if not Path(base).is_file():
            raise ConfigError(f"{shown}: base {name!r} not found (looked for {Path(base).resolve()})")
        parent = resolve_file(base, (*_chain, real))
        deep_merge(merged.data, parent.data, merged.origins, base)
        merged.origins.update(parent.origins)  # each leaf named by the file that really set it
    deep_merge(merged.data, data, merged.origins, shown)
    return merged


def annotated_yaml(dump: dict[str, Any], resolved: Resolved, default: str = "default") -> str:
    """The validated config ``dump`` as block YAML with ``# <file>`` after every value:
    the file (or ``--set``) that set it, or ``default`` when no file did."""
    lines: list[str] = []

    def emit(node: dict[str, Any], path: KeyPath, indent: str) -> None:
        for key, value in node.items():
            here = (*path, str(key))
            if isinstance(value, dict) and value:
                lines.append(f"{indent}{_flow(key)}:")
                emit(value, here, indent + "  ")
            else:
                text = f"{indent}{_flow(key)}: {_flow(value)}"
                lines.append(f"{text}  # {resolved.origin(here) or default}")

    emit(dump, (), "")
    return "\n".join(lines) + "\n"


def _flow(value: Any) -> str:
    """One YAML scalar, list or empty mapping on one line (as ``yaml.safe_load`` reads it back)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").removesuffix("...").strip()
