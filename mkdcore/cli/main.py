"""The ``mkd`` click group.

Commands live one module per command (group) and are imported lazily, so ``mkd
--help`` and ``mkd status`` do not pay for importing torch. Plugins add commands
through the ``register_commands`` hook.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys

import click

from mkdcore import __version__
from mkdcore.errors import MkdError

#: command name -> "module:attribute"
COMMANDS: dict[str, str] = {
    "plugins": "mkdcore.cli.plugins_cmd:plugins",
    "config": "mkdcore.cli.config_cmd:config",
    "doctor": "mkdcore.cli.doctor_cmd:doctor",
    "data": "mkdcore.cli.data_cmd:data",
    "profile": "mkdcore.cli.profile_cmd:profile",
    "run": "mkdcore.cli.run_cmd:run",
    "eval": "mkdcore.cli.eval_cmd:eval_cmd",
    "export": "mkdcore.cli.export_cmd:export",
    "convert": "mkdcore.cli.convert_cmd:convert",
    "predict": "mkdcore.cli.predict_cmd:predict",
    "support": "mkdcore.cli.support_cmd:support",
    "results": "mkdcore.cli.results_cmd:results",
    "submit": "mkdcore.cli.submit_cmd:submit",
    "worker": "mkdcore.cli.worker_cmd:worker",
    "status": "mkdcore.cli.status_cmd:status",
    "logs": "mkdcore.cli.logs_cmd:logs",
    "cancel": "mkdcore.cli.cancel_cmd:cancel",
    "retry": "mkdcore.cli.retry_cmd:retry",
    "up": "mkdcore.cli.up_cmd:up",
    "down": "mkdcore.cli.up_cmd:down",
}


class LazyGroup(click.Group):
    """A group whose commands are imported only when used.

    ``lazy_commands`` maps a command name to ``"module:attribute"``.
    """

    def __init__(self, *args, lazy_commands: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.lazy_commands) | set(self.commands))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        spec = self.lazy_commands.get(name)
        if spec is None:
            return None
        module_name, attr = spec.split(":")
        return getattr(importlib.import_module(module_name), attr)


class RootGroup(LazyGroup):
    """The top-level group: built-in lazy commands plus the commands plugins add through
    ``register_commands``. Plugins are loaded only when a name is not built in or when
    the command list is shown (``mkd --help``), so ``mkd status`` never pays for them."""

    _plugins_loaded = False

    def _load_plugin_commands(self) -> None:
        if not self._plugins_loaded:
            self._plugins_loaded = True
            from mkdcore.plugins import get_manager

            get_manager().add_commands(self)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_plugin_commands()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None:
            self._load_plugin_commands()
            command = self.commands.get(name)
        return command


@click.group(cls=RootGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="mkd")
def cli() -> None:
    """mkd: multi-modal knowledge distillation for lightweight few-shot action recognition.

    Run an experiment in-process with `mkd run CONFIG`, or queue it on GPU workers
    with `mkd submit CONFIG`.
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr, no traceback."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never wait on a model hub
    try:
        cli.main(args=argv, prog_name="mkd", standalone_mode=True)
    except MkdError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # the machine, not mkd or the user's input: a full disk, a file-size limit, a
        # permission; say which file (appends to logs and metrics are not worth a
        # wrapper each). Finished stages are untouched: manifests are written last.
        from mkdcore.fileio import describe_os_error

        where = f" {exc.filename}" if exc.filename else ""
        click.echo(f"error: cannot read or write{where}: {describe_os_error(exc)}", err=True)
        sys.exit(2)


def console() -> None:
    """The ``mkd`` executable and ``python -m mkdcore.cli.main`` (queue stages): :func:`main`,
    then every object left is frozen out of the garbage collector before the interpreter
    exits. Its shutdown collections walk the whole heap, torch's, torch._dynamo's and
    sympy's objects included: about 0.8 s of CPU per process that imported them, paid by
    every queue stage. Cleanup that matters (checkpoints, manifests, loggers) is explicit
    and done by then. Not in :func:`main`, which in-process callers (tests) reuse."""
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    console()
