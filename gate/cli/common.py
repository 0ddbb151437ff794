"""What the command modules share: the usage error, the --config option, and the gate it configures."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gate.config import load_settings
from gate.errors import WaltzGateError

if TYPE_CHECKING:
    from gate.engine import Gate

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="YAML config file (environment variables override it).")
]


class UsageError(WaltzGateError):
    """Bad input from the user: reported as one sentence with exit status 2."""


def open_gate(config: Path | None) -> Gate:
    from gate.engine import Gate

    return Gate.from_settings(load_settings(config))
