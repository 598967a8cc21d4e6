"""The hooks a plugin can implement: one registration hook per extension kind.

Every hook receives a ``register`` callback instead of returning values (the style of
simonw/llm): a plugin calls it once per component it provides::

    from mkdcore.hookspecs import hookimpl

    @hookimpl
    def register_heads(register):
        register("my_head", MyHead, options=MyHeadOptions, description="...")

``register(name, factory, options=None, description=None, **capabilities)``:

* ``name``: what configs and :func:`mkdcore.api.create` use. A name ending in ``:*``
  (e.g. ``"timm:*"``) is a wildcard: ``create("backbone", "timm:convnext_tiny")``
  reaches it and the factory receives the matched suffix as its ``variant`` option.
* ``factory``: a callable (often a class) called with the validated options as
  keyword arguments.
* ``options``: a pydantic model of the factory's options. Unknown options are errors
  naming the option; ``None`` means the factory takes no options.
* ``description``: one line for ``mkd plugins``; defaults to the factory's docstring.
* ``capabilities``: what the component declares about itself, so that core code never
  tests a component's name. Known today (:data:`mkdcore.registry.CAPABILITIES`, with
  the default assumed when a component declares nothing): a distiller's
  ``needs_teacher`` (``True``; ``register("ce", CE, needs_teacher=False)`` gives its
  student no teacher stages). An unknown capability is an error.

Options the pipeline fills in: widths and sizes are known only when models are built
(after the config is validated), so the pipeline sets these options *if the
component's options model declares them* and the config does not set them: a head's
``in_dim`` (the backbone's ``out_dim``, or the fusion's ``dim``) and ``seq_len``
(``data.frames``); a fusion's ``dim`` (the teachers' feature width), ``seq_len`` and
``modalities`` (``modalities.names``); a distiller's ``tasks_per_batch``
(``training.tasks_per_batch``, to scale its terms as the engine accumulates). A
component that does not declare one of them never receives it.

The hooks are called once, lazily, the first time a registry is needed (after every
plugin from the ``mkd`` entry-point group has been registered with the manager).
Two plugins that register the same name for the same kind are an error that names
both packages. Implementations may accept fewer arguments than the spec (pluggy's
opt-in arguments), so new arguments can be added later without breaking plugins.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import pluggy

PROJECT_NAME = "mkd"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


class Register(Protocol):
    """The callback every ``register_*`` hook receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        options: type | None = None,
        description: str | None = None,
        **capabilities: Any,
    ) -> None: ...


# --------------------------------------------------------------------------------------
# Model components
# --------------------------------------------------------------------------------------


@hookspec
def register_backbones(register: Register) -> None:
    """Register frame encoders (kind ``backbone``).

    Called once when the backbone registry is first needed. A backbone factory returns
    an ``nn.Module`` mapping frames ``(N, 3, H, W)`` to a dict with at least
    ``"features"``: ``(N, D)`` per-frame features (and ``"features_2"`` for two-branch
    students), and exposes ``out_dim: int``. It must never download weights: a
    pretrained state dict comes from a local file named in its options.
    """


@hookspec
def register_heads(register: Register) -> None:
    """Register few-shot classifiers (kind ``head``).

    Called once when the head registry is first needed. A head is an ``nn.Module``
    called as ``head(support (Ns, T, D), support_labels (Ns,), queries (Nq, T, D))``
    returning a dict with ``"logits"`` ``(Nq, W)``, column ``c`` belonging to support
    label ``c``, plus named extras: ``"relations"`` ``(W, W-1)``, the inter-prototype
    relations of the support set that the D2M distiller reads. Nothing may assume
    a fixed way, shot, query count, frame count or width.

    Optional: ``head.prepare(support, support_labels, way)`` returning a callable
    ``queries -> logits`` that computes what depends only on the support set once
    (:meth:`mkdcore.models.trx.TRXHead.prepare`); prediction then calls it per query
    instead of the whole head. Its logits must equal ``head(...)["logits"]``.
    """


@hookspec
def register_fusions(register: Register) -> None:
    """Register multi-modal fusion modules (kind ``fusion``).

    Called once when the fusion registry is first needed. A fusion module maps a dict
    ``{modality: (B, T, D)}`` (rgb first) to fused features ``(B, T, D)``. The same
    forward is used in training and in feature extraction.
    """


@hookspec
def register_distillers(register: Register) -> None:
    """Register distillation loss recipes (kind ``distiller``).

    Called once when the distiller registry is first needed. A distiller is called with
    the student's outputs, the teacher's outputs (or ``None``) and the query labels,
    and returns a dict of named scalar loss terms including ``"total"``.
    """


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@hookspec
def register_modalities(register: Register) -> None:
    """Register modalities derived from RGB frames (kind ``modality``).

    Called once when the modality registry is first needed. A modality factory returns
    an object with ``name``, ``channels`` and ``derive(clip)`` which turns the RGB
    frames of one video into one image per frame, stored in ``<root>/<name>_l8``
    beside the RGB frames with the same file names. ``rgb`` itself is a modality.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register dataset sources (kind ``dataset``).

    Called once when the dataset registry is first needed. A dataset factory prepares
    (or checks) a dataset root in the standard layout and returns its path, e.g. the
    procedurally rendered ``synthetic`` dataset or a standard split such as ``ucf101``.
    """


# --------------------------------------------------------------------------------------
# Tracking
# --------------------------------------------------------------------------------------


@hookspec
def register_loggers(register: Register) -> None:
    """Register experiment trackers (kind ``logger``), named in ``logging.loggers``.

    Called once when the logger registry is first needed (when a config is validated).
    The factory is called with the logger's options (``logging.options.<name>``) once
    per stage run and returns a :class:`mkdcore.tracking.Logger`: ``start(run)`` with a
    :class:`mkdcore.tracking.RunInfo` (experiment, stage, content key, stage folder,
    resolved config, the task a resumed run continues from), then ``scalars(task,
    values)`` every ``training.log_every`` tasks (loss terms, ``lr``, ``train_acc``,
    ``rate`` in tasks/s), ``validation(task, values)`` (``val_acc``; test accuracies
    from ``evaluate``), ``artifact(path)`` (plots, the report) and ``finish(status)``.
    Every method is optional (the base class's are no-ops). A logger that raises is
    dropped for the rest of the run with one warning; it never stops training. Import
    the tracking library inside the factory (or the options model's validator), so a
    missing library is one line naming the extra to install, not a broken plugin.
    """


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


@hookspec
def register_commands(cli: Any) -> None:
    """Add commands to the ``mkd`` click group.

    Called lazily, the first time the CLI needs a command that is not built in, or
    lists its commands (``mkd --help`` shows plugin commands beside the built-in ones);
    never for built-in commands, so they do not import plugins. ``cli`` is the
    top-level ``click.Group``: use ``@cli.command()`` or ``cli.add_command(...)``.
    """
