"""The ``waltz-gate`` command line, one module per command group. Bad input exits 2 with one sentence, never a
traceback."""

from __future__ import annotations

import sys

import typer

from gate.cli import check, models, rollout, training
from gate.errors import WaltzGateError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="waltz-gate: a safety gate for LLM agents, and the WaltzRL trainer behind its models.",
)
app.add_typer(check.app)
app.add_typer(models.app)
app.add_typer(training.app)
app.add_typer(rollout.app, name="rollout")


def main() -> None:
    """Console-script entry point: project errors become one sentence and exit status 2."""
    try:
        app()
    except WaltzGateError as exc:
        typer.echo(f"error: {str(exc).rstrip('.')}.", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
