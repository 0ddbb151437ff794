"""Command-line parameters that a command takes in another form (typer has no shared options of its own).

The rollout commands share --plan/--admin-url/--admin-token and take the connected plan and Admin API
instead; `train` has one flag per field of the trainer's config model and takes the values set.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Collection, Sequence
from typing import Any


def with_params(extra: Sequence[inspect.Parameter], supply: Callable[..., dict[str, Any]], replaces: Collection[str]):
    """Decorate a command: typer sees its own parameters less `replaces`, plus `extra`. A call passes the values
    of `extra` to `supply`, which returns a dict keyed by `replaces`; the command gets those of them it declares."""

    def decorate(fn: Callable) -> Callable:
        signature = inspect.signature(fn, eval_str=True).parameters
        own = [p for p in signature.values() if p.name not in replaces]
        wanted = [name for name in replaces if name in signature]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in (*own, *extra)]

        @functools.wraps(fn)
        def command(**values: Any) -> Any:
            supplied = supply(**{p.name: values.pop(p.name) for p in extra})
            return fn(**values, **{name: supplied[name] for name in wanted})

        command.__signature__ = inspect.Signature(params)  # what typer reads, instead of fn's
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return decorate
