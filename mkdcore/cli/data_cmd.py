"""``mkd data ...``: import, check, synthesise, derive and sample episodes.

Each subcommand lives in its own module (imported only when used).
"""

from __future__ import annotations

import click

from mkdcore.cli.main import LazyGroup

DATA_COMMANDS: dict[str, str] = {
    "import": "mkdcore.cli.data_import:import_videos",
    "check": "mkdcore.cli.data_check:check",
    "synth": "mkdcore.cli.data_synth:synth",
    "episodes": "mkdcore.cli.data_episodes:episodes",
    "derive": "mkdcore.cli.data_derive:derive",
}


@click.group(cls=LazyGroup, lazy_commands=DATA_COMMANDS)
def data() -> None:
    """Datasets in the frame layout <root>/<modality>_l8/<class>/<video>/*.jpg."""
