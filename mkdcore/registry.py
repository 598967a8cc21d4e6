"""Named component registries filled by the ``register_*`` hooks.

Each registered component is a :class:`PluginSpec`: a factory plus the pydantic
model of its options and where it came from (package and version), so errors and
``mkd plugins`` can say who provides what.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from pydantic import BaseModel, ValidationError

from mkdcore.errors import PluginError

KINDS: tuple[str, ...] = ("backbone", "head", "fusion", "distiller", "modality", "dataset", "logger")

#: hook name for each kind
HOOK_OF_KIND: dict[str, str] = {
    "backbone": "register_backbones",
    "head": "register_heads",
    "fusion": "register_fusions",
    "distiller": "register_distillers",
    "modality": "register_modalities",
    "dataset": "register_datasets",
    "logger": "register_loggers",
}

WILDCARD_SUFFIX = ":*"

#: What a component may declare about itself when it registers (``register(...,
#: needs_teacher=False)``), per kind, with the value the pipeline assumes when it
#: declares nothing. Core code asks a component's spec (:meth:`PluginSpec.capability`),
#: never its name, so a third-party component gets the same treatment as a built-in.
CAPABILITIES: dict[str, dict[str, Any]] = {
    # a distiller that never looks at a teacher: its student needs no teacher stages
    "distiller": {"needs_teacher": True},
}


@dataclass(frozen=True)
class PluginSpec:
    """One registered component."""

    kind: str
    name: str
    factory: Callable[..., Any]
    options: type[BaseModel] | None
    description: str
    plugin: str
    package: str
    version: str
    capabilities: dict[str, Any] = field(default_factory=dict)

    def capability(self, name: str) -> Any:
        """A declared capability, else the kind's documented default (:data:`CAPABILITIES`)."""
        return self.capabilities.get(name, CAPABILITIES[self.kind][name])

    @property
    def is_wildcard(self) -> bool:
        return self.name.endswith(WILDCARD_SUFFIX)

    def options_summary(self) -> str:
        """``name=default, ...`` of the options model, for listings."""
        if self.options is None:
            return ""
        parts = []
        for key, info in self.options.model_fields.items():
            default = "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
            parts.append(f"{key}={default}")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "package": self.package,
            "version": self.version,
            "plugin": self.plugin,
            "description": self.description,
            "options": self.options.model_json_schema() if self.options else None,
            "options_summary": self.options_summary(),
            "capabilities": {**CAPABILITIES.get(self.kind, {}), **self.capabilities},
            "broken": False,
        }


@dataclass(frozen=True)
class BrokenPlugin:
    """A plugin that failed to import or to register: skipped so that every other command
    still works, listed by ``mkd plugins`` and ``mkd doctor``, and named when a lookup
    fails (it may be the one that provides the missing component)."""

    name: str  # entry-point (plugin) name
    package: str
    version: str
    error: str  # one line: "ModuleNotFoundError: No module named 'x'"

    def describe(self) -> str:
        return f"{self.name} (package {self.package}: {self.error})"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": None, "package": self.package, "version": self.version,
                "plugin": self.name, "broken": True, "error": self.error}


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line naming every bad field by its dotted path."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        path = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")  # our validators' own words suffice
        parts.append(f"{path}: {msg}")
    return "; ".join(parts)


@dataclass
class Registry:
    """All components of one plugin manager, by kind then name."""

    entries: dict[str, dict[str, PluginSpec]] = field(default_factory=lambda: {k: {} for k in KINDS})
    #: plugins that could have provided a missing name: failed to load, or switched off
    broken: list[BrokenPlugin] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)

    def add(self, spec: PluginSpec) -> None:
        table = self.entries.setdefault(spec.kind, {})
        if spec.name in table:
            other = table[spec.name]
            raise PluginError(
                f"{spec.kind} {spec.name!r} is registered twice: by {other.package} "
                f"(plugin {other.plugin}) and by {spec.package} (plugin {spec.plugin})"
            )
        table[spec.name] = spec

    def discard_plugin(self, plugin: str) -> None:
        """Forget what one plugin registered (its hook failed half-way)."""
        for table in self.entries.values():
            for name in [n for n, spec in table.items() if spec.plugin == plugin]:
                del table[name]

    def names(self, kind: str) -> list[str]:
        return sorted(self.entries.get(kind, {}))

    def missing_plugins_hint(self) -> str:
        """``; ...`` naming the plugins that were not loaded (empty when all were)."""
        hint = ""
        if self.broken:
            hint += "; plugins that failed to load (one may provide it): " + ", ".join(b.describe() for b in self.broken)
        if self.disabled:
            hint += f"; disabled by MKD_DISABLE_PLUGINS: {', '.join(self.disabled)}"
        return hint

    def resolve(self, kind: str, name: str) -> tuple[PluginSpec, dict[str, Any]]:
        """The spec for ``name`` and the options implied by the name (wildcards)."""
        if kind not in self.entries:
            raise PluginError(f"unknown plugin kind {kind!r}; kinds: {', '.join(KINDS)}")
        table = self.entries[kind]
        if name in table and not table[name].is_wildcard:
            return table[name], {}
        if ":" in name:
            prefix, _, variant = name.partition(":")
            spec = table.get(prefix + WILDCARD_SUFFIX)
            if spec is not None and variant:
                return spec, {"variant": variant}
        known = ", ".join(self.names(kind)) or "(none)"
        plural = HOOK_OF_KIND[kind].removeprefix("register_")  # "modalities", not "modalitys"
        raise PluginError(f"unknown {kind} {name!r}; registered {plural}: {known}{self.missing_plugins_hint()}")

    def get(self, kind: str, name: str) -> PluginSpec:
        return self.resolve(kind, name)[0]

    def validate_options(self, kind: str, name: str, options: dict[str, Any] | None, where: str = "") -> BaseModel | None:
        """Validate ``options`` with the plugin's own model; errors name the path."""
        spec, implied = self.resolve(kind, name)
        options = {**implied, **(options or {})}
        label = where or f"{kind} {name!r} options"
        if spec.options is None:
            if options:
                raise PluginError(f"{label}: {kind} {name!r} takes no options, got {sorted(options)}")
            return None
        try:
            return spec.options.model_validate(options)
        except ValidationError as err:
            raise PluginError(f"{label}: {format_validation_error(err)}") from None

    def create(self, kind: str, name: str, **options: Any) -> Any:
        """Build a component with its options validated by its own model."""
        spec, _ = self.resolve(kind, name)
        validated = self.validate_options(kind, name, options)
        kwargs = {} if validated is None else {k: getattr(validated, k) for k in type(validated).model_fields}
        return spec.factory(**kwargs)


def describe(factory: Callable[..., Any], description: str | None) -> str:
    if description:
        return description
    doc = inspect.getdoc(factory) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
