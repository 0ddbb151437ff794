"""JSON Lines: the one reader for every JSONL file the project reads (requests, data sets, records, metrics).

A line ends at '\\n' only: U+2028/U+2029 (and other characters str.splitlines treats as breaks) may sit
inside a JSON string. Blank lines are skipped; every other line must be a JSON object, optionally
validated against a pydantic model. The first bad line raises JsonlError naming the file and the line.
A path ending in ``.gz`` is read through gzip.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from gate.config import describe
from gate.errors import WaltzGateError


class JsonlError(WaltzGateError, ValueError):
    """A JSONL file that cannot be read, or a line that is not a valid row; the message names file and line."""


def parse_lines(lines: Iterable[str], source: str, schema: type[BaseModel] | None = None,
                first: int = 1) -> Iterator[tuple[int, Any]]:
    """(line number, row) for each non-blank line; `first` is the number of the first line (for a tail)."""
    for n, line in enumerate(lines, first):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JsonlError(f"{source} line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise JsonlError(f"{source} line {n}: expected a JSON object, not {type(row).__name__}")
        if schema is not None:
            try:
                row = schema.model_validate(row)
            except ValidationError as exc:
                raise JsonlError(describe(exc, prefix=f"{source} line {n}: ").rstrip(".")) from None
        yield n, row


def iter_jsonl(path: str | Path, schema: type[BaseModel] | None = None, what: str = "file") -> Iterator[tuple[int, Any]]:
    """(line number, row) for each row of `path`, streamed; `what` names the file in read errors ("": the path
    alone)."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="\n") as fh:  # newline="\n": split on '\n' alone
            yield from parse_lines(fh, str(path), schema)
    except UnicodeDecodeError:
        raise JsonlError(f"{name} is not UTF-8 text") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise JsonlError(f"{name} is not a complete gzip file ({exc})") from None
    except OSError as exc:
        raise JsonlError(f"cannot read {name}: {exc.strerror or exc}") from None


def read_jsonl(path: str | Path, schema: type[BaseModel] | None = None, what: str = "file") -> list[Any]:
    """Every row of `path` (dicts, or `schema` instances)."""
    return [row for _, row in iter_jsonl(path, schema, what)]
