"""The ``ledger`` command line (click + rich): run the service, read what it holds, operate it.

Each family of commands lives in its own module; :mod:`api.cli.common` holds what they share.
Errors a person can act on end the command with one line, ``ledger: error: …``, and exit
status 2, as do usage errors.
"""

from __future__ import annotations

import importlib

import rich_click as click

from api.cli.common import CommandError, fail
from ledger.settings import SettingsError

click.rich_click.TEXT_MARKUP = "markdown"

#: Each command, by name: the module defining it and the command's name there.
COMMANDS = {
    "serve": ("api.cli.service", "serve"),
    "worker": ("api.cli.service", "worker"),
    "migrate": ("api.cli.service", "migrate"),
    "audit": ("api.cli.support", "audit"),
    "status": ("api.cli.support", "status"),
    "messages": ("api.cli.support", "messages"),
    "metrics": ("api.cli.analysts", "metrics"),
    "alerts": ("api.cli.analysts", "alerts"),
    "send": ("api.cli.sending", "send_command"),
    "verify": ("api.cli.trust", "verify"),
    "seal": ("api.cli.trust", "seal"),
    "replay": ("api.cli.operations", "replay"),
    "token": ("api.cli.operations", "token"),
    "simulate": ("api.cli.simulation", "simulate"),
}
#: Help panels and their commands, in the order a newcomer needs them.
PANELS = (
    ("Run the service", ("serve", "worker", "migrate")),
    ("Support and analysts", ("audit", "status", "messages", "metrics", "alerts")),
    ("Send and track", ("send",)),
    ("Prove", ("verify", "seal")),
    ("Operate", ("replay", "token", "simulate")),
)


class LazyGroup(click.RichGroup):
    """Imports a command's module only when that command runs (or the help lists it), so
    that ``ledger replay`` does not pay for the web framework that ``ledger serve`` needs;
    lists commands in :data:`COMMANDS`' order, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Command names in :data:`COMMANDS`' order."""
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command called ``cmd_name``, its module imported now; None if there is none."""
        if cmd_name not in COMMANDS:
            return None
        module, name = COMMANDS[cmd_name]
        command: click.Command = getattr(importlib.import_module(module), name)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """An event-sourced ledger of Plivo delivery callbacks.

    Every command reads its settings from the environment, or from the .env file that
    LEDGER_ENV_FILE names (else ./.env), and finds its data in LEDGER_DATA_DIR (by default
    a per-user directory), so it talks to the same ledger from any directory. Run
    'ledger COMMAND --help' for a command's options and examples.
    """


for _title, _names in PANELS:
    click.command_panel(_title, commands=list(_names))(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``ledger`` command: run it, and turn every error a person can act
    on into one line and exit status 2 (``ledger`` alone prints the help, status 2)."""
    try:
        outcome = cli.main(args=argv, prog_name="ledger", standalone_mode=False)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "ledger"
        fail(f"{error.format_message().rstrip('.')} (see '{command} --help')")
    except click.ClickException as error:
        fail(error.format_message())
    except (SettingsError, CommandError) as error:
        fail(str(error))
    except (KeyboardInterrupt, click.Abort):
        raise SystemExit(130) from None
    raise SystemExit(outcome if isinstance(outcome, int) else 0)
