"""JSON Lines: the one reader for every JSONL file the project reads (requests, data sets, records, metrics).

A line ends at '\\n' only: U+2028/U+2029 (and other characters str.splitlines treats as breaks) may sit
inside a JSON string. Blank lines are skipped; every other line must be a JSON object, optionally
validated against a pydantic model. The first bad line raises JsonlError naming the file and the line.
A path ending in ``.gz`` is read through gzip. Requests typed or pasted by people may instead be one JSON document
(an object spread over several lines, or an array of objects): `parse_requests` takes both.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

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
        yield n, _row(row, f"{source} line {n}", schema)


def _row(value: Any, where: str, schema: type[BaseModel] | None) -> Any:
    if not isinstance(value, dict):
        raise JsonlError(f"{where}: expected a JSON object, not {type(value).__name__}")
    if schema is None:
        return value
    try:
        return schema.model_validate(value)
    except ValidationError as exc:
        raise JsonlError(describe(exc, prefix=f"{where}: ").rstrip(".")) from None


def parse_requests(text: str, source: str, schema: type[BaseModel] | None = None) -> list[Any]:
    """The rows of `text`: JSON Lines, or, when the whole text is one JSON document, that object (however it is
    laid out) or the objects of that array."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError:  # more than one line of JSON (or bad JSON): read as JSON Lines, naming the line
        return [row for _, row in parse_lines(text.split("\n"), source, schema)]
    if isinstance(document, list):
        return [_row(item, f"{source} item {i}", schema) for i, item in enumerate(document, 1)]
    return [_row(document, source, schema)]


@contextmanager
def _reading(path: Path, what: str) -> Iterator[TextIO]:
    """`path` open for text (through gzip for ``.gz``, lines split on '\\n' alone); read errors become a
    JsonlError with a sentence (`what` names the file: "" for the path alone)."""
    name = f"{what} {path}" if what else str(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", newline="\n") as fh:
            yield fh
    except UnicodeDecodeError:
        raise JsonlError(f"{name} is not UTF-8 text") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise JsonlError(f"{name} is not a complete gzip file ({exc})") from None
    except OSError as exc:
        raise JsonlError(f"cannot read {name}: {exc.strerror or exc}") from None


def read_text(path: str | Path, what: str = "file") -> str:
    """The whole text of `path`."""
    with _reading(Path(path), what) as fh:
        return fh.read()


def iter_jsonl(path: str | Path, schema: type[BaseModel] | None = None, what: str = "file") -> Iterator[tuple[int, Any]]:
    """(line number, row) for each row of `path`, streamed."""
    with _reading(Path(path), what) as fh:
        yield from parse_lines(fh, str(path), schema)


def read_jsonl(path: str | Path, schema: type[BaseModel] | None = None, what: str = "file") -> list[Any]:
    """Every row of `path` (dicts, or `schema` instances)."""
    return [row for _, row in iter_jsonl(path, schema, what)]
