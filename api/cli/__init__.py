"""The ``ledger`` command line (click + rich): run the service, read what it holds, operate it.

Each family of commands lives in its own module; :mod:`api.cli.common` holds what they share.
Errors a person can act on end the command with one line, ``ledger: error: …``, and exit
status 2, as do usage errors.
"""

from __future__ import annotations

import rich_click as click

from api.cli.analysts import alerts, metrics
from api.cli.common import CommandError, fail
from api.cli.operations import replay, token
from api.cli.sending import send_command
from api.cli.service import migrate, serve, worker
from api.cli.simulation import simulate
from api.cli.support import audit, messages, status
from api.cli.trust import seal, verify
from ledger.settings import SettingsError

click.rich_click.TEXT_MARKUP = "markdown"

#: Help panels and their commands, in the order a newcomer needs them.
PANELS = (
    ("Run the service", (serve, worker, migrate)),
    ("Support and analysts", (audit, status, messages, metrics, alerts)),
    ("Send and track", (send_command,)),
    ("Prove", (verify, seal)),
    ("Operate", (replay, token, simulate)),
)


class OrderedGroup(click.RichGroup):
    """Lists commands in the order they were added, not alphabetically."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Command names in registration order."""
        return list(self.commands)


@click.group(cls=OrderedGroup, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """An event-sourced ledger of Plivo delivery callbacks.

    Every command reads its settings from the environment, or from the .env file that
    LEDGER_ENV_FILE names (else ./.env), and finds its data in LEDGER_DATA_DIR (by default
    a per-user directory), so it talks to the same ledger from any directory. Run
    'ledger COMMAND --help' for a command's options and examples.
    """


for _title, _commands in PANELS:
    for _command in _commands:
        cli.add_command(_command)
    click.command_panel(_title, commands=[command.name or "" for command in _commands])(cli)


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
