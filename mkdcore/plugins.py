"""The plugin manager: loads the ``mkd`` entry-point group and builds registries.

Built-in plugins (``plugins/``) are registered through the same ``mkd`` entry-point
group as third-party packages, so they get no special treatment (dogfooding, as
datasette and llm do). Environment variables, as in datasette and llm:

* ``MKD_LOAD_PLUGINS=a,b``: load only the entry points named ``a`` and ``b``
  (an empty value loads none);
* ``MKD_DISABLE_PLUGINS=a,b``: never import the entry points named ``a`` and ``b``
  (like pytest's ``-p no:NAME``), e.g. to silence a broken plugin you do not use;
* ``MKD_TRACE_PLUGINS=1``: print every hook call, its implementations and results
  to stderr.

A plugin that fails to import, to register or in its ``register_*`` hook does not stop
mkd: it is reported once (one ``warning:`` line on stderr), skipped, recorded in
:attr:`PluginManager.broken`, shown by ``mkd plugins`` and failed by ``mkd doctor``, and
named in the error of any lookup that fails (it may be what provides the missing name).
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points
from typing import Any, Callable

import pluggy

from mkdcore import hookspecs, settings
from mkdcore.errors import PluginError
from mkdcore.registry import (
    CAPABILITIES,
    HOOK_OF_KIND,
    BrokenPlugin,
    PluginSpec,
    Registry,
    describe,
)

ENTRY_POINT_GROUP = "mkd"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: message`` on one line (import errors can span several)."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PluginManager:
    """A pluggy manager plus the component registry built from its hooks."""

    def __init__(self, load_entrypoints: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self._registry: Registry | None = None
        self._sources: dict[str, tuple[str, str]] = {}  # plugin name -> (package, version)
        self.broken: dict[str, BrokenPlugin] = {}  # plugin name -> why it was skipped
        self.disabled: list[str] = []  # entry points skipped by MKD_DISABLE_PLUGINS
        if settings.TRACE_PLUGINS.flag():
            self.pm.add_hookcall_monitoring(_trace_before, _trace_after)
        if load_entrypoints:
            self.load_entrypoints()
        self.pm.check_pending()

    # ---------------------------------------------------------------- loading
    def load_entrypoints(self) -> None:
        """Import and register the ``mkd`` entry points; a broken one is skipped (warned)."""
        only = settings.LOAD_PLUGINS.names()
        disabled = settings.DISABLE_PLUGINS.names() or set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if only is not None and ep.name not in only:
                continue
            if ep.name in disabled:
                self.disabled.append(ep.name)
                continue
            if self.pm.get_plugin(ep.name) is not None or ep.name in self.broken:
                continue
            dist_name = ep.dist.name if ep.dist else "unknown"
            dist_version = ep.dist.version if ep.dist else "?"
            try:
                module = ep.load()
                self.register(module, name=ep.name, package=dist_name, version=dist_version)
            except Exception as exc:  # one broken third-party plugin must not stop every command
                self._mark_broken(ep.name, dist_name, dist_version, exc)

    def _mark_broken(self, name: str, package: str, version: str, exc: BaseException) -> None:
        """Skip a plugin that failed, and say so once on stderr."""
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        self._sources.pop(name, None)
        self._registry = None
        broken = BrokenPlugin(name=name, package=package, version=version, error=_one_line(exc))
        self.broken[name] = broken
        print(f"warning: plugin {name!r} from package {package} failed to load and is skipped: {broken.error} "
              f"(set MKD_DISABLE_PLUGINS={name} to silence this)", file=sys.stderr)

    def register(self, plugin: Any, name: str | None = None, package: str | None = None, version: str = "") -> str:
        """Register a module or object as a plugin (tests and inline plugins use this)."""
        plugin_name = self.pm.register(plugin, name=name)
        if plugin_name is None:
            raise PluginError(f"plugin {name or plugin!r} is already registered")
        pkg = package or getattr(plugin, "__name__", None) or type(plugin).__name__
        self._sources[plugin_name] = (pkg, version)
        self._registry = None
        self.pm.check_pending()
        return plugin_name

    def unregister(self, name: str) -> None:
        self.pm.unregister(name=name)
        self._sources.pop(name, None)
        self._registry = None

    # ---------------------------------------------------------------- registry
    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = self._build_registry()
        return self._registry

    def _build_registry(self) -> Registry:
        registry = Registry()
        for kind, hook_name in HOOK_OF_KIND.items():
            hook = getattr(self.pm.hook, hook_name)
            # Call each implementation with its own ``register`` so that every
            # component knows which plugin (and package) provided it.
            for impl in reversed(hook.get_hookimpls()):
                register = self._make_register(registry, kind, impl.plugin_name)
                if settings.TRACE_PLUGINS.flag():
                    print(f"mkd: {hook_name} -> {impl.plugin_name}", file=sys.stderr)
                try:
                    impl.function(**{arg: register for arg in impl.argnames})
                except PluginError:
                    raise  # a clash between plugins or a bad name: the message says who
                except Exception as exc:  # a bug inside one plugin's hook: skip that plugin
                    package, version = self._sources.get(impl.plugin_name, (impl.plugin_name, ""))
                    self._mark_broken(impl.plugin_name, package, version, exc)
                    registry.discard_plugin(impl.plugin_name)
        registry.broken = list(self.broken.values())
        registry.disabled = list(self.disabled)
        return registry

    def _make_register(self, registry: Registry, kind: str, plugin_name: str) -> Callable[..., None]:
        package, version = self._sources.get(plugin_name, (plugin_name, ""))

        def register(name: str, factory: Callable[..., Any], options: type | None = None, description: str | None = None,
                     **capabilities: Any) -> None:
            if not isinstance(name, str) or not name:
                raise PluginError(f"plugin {plugin_name!r} registered a {kind} with an invalid name {name!r}")
            known = CAPABILITIES.get(kind, {})
            unknown = sorted(set(capabilities) - set(known))
            if unknown:
                raise PluginError(f"plugin {plugin_name!r} registered {kind} {name!r} with unknown capability "
                                  f"{unknown[0]!r}; a {kind} may declare: {', '.join(known) or 'nothing'}")
            registry.add(
                PluginSpec(
                    kind=kind,
                    name=name,
                    factory=factory,
                    options=options,
                    description=describe(factory, description),
                    plugin=plugin_name,
                    package=package,
                    version=version,
                    capabilities=dict(capabilities),
                )
            )

        return register

    def add_commands(self, cli: Any) -> None:
        self.pm.hook.register_commands(cli=cli)

    def list_plugins(self, kind: str | None = None) -> list[PluginSpec]:
        specs = [s for k, table in self.registry.entries.items() if kind in (None, k) for s in table.values()]
        return sorted(specs, key=lambda s: (s.kind, s.name))


def _trace_before(hook_name: str, hook_impls: list, kwargs: dict) -> None:
    print(f"mkd: hook {hook_name} -> {[i.plugin_name for i in hook_impls]}", file=sys.stderr)


def _trace_after(outcome: Any, hook_name: str, hook_impls: list, kwargs: dict) -> None:
    print(f"mkd: hook {hook_name} returned {outcome.get_result()!r}", file=sys.stderr)


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def set_manager(manager: PluginManager | None) -> PluginManager | None:
    """Swap the process-wide manager (tests); returns the previous one."""
    global _manager
    previous, _manager = _manager, manager
    return previous
