"""Stage 1: the pattern plugins. Each scans the prompt and the response with one pack.

The entry points are the list of packs: ``harmful = "plugins.stage1:harmful"`` (pyproject.toml) names this
module's attribute ``harmful``, the plugin class of ``packs/harmful.yaml``, made on first access (PEP 562)
with the pack file's description. A new pack is its YAML file in ``packs/`` and one entry-point line; the
pack tests run over every installed pattern plugin (``installed_packs``). Another package can ship a pack
too: a ``PatternPlugin`` subclass with its own ``name``, ``description`` and ``pack_file``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from gate.hookspecs import hookimpl
from gate.registry import installed
from gate.types import CheckRequest, Detection, Source
from plugins.pattern_pack import PatternError, PatternPack, read_spec

PACKS = Path(__file__).parent / "packs"


class PatternPlugin:
    stage = 1
    timeout_ms = 50.0
    name: str
    description: str
    pack_file: Path

    class Settings(BaseModel):
        pack: Path | None = None  # a pack file to use instead of the built-in one
        # Spans per category that keep masked evidence in the finding (every match is redacted whatever it is).
        max_spans: int = Field(default=16, ge=0)

    @hookimpl
    def gate_setup(self, settings: dict[str, Any]) -> None:
        self.pack = PatternPack.load(settings["pack"] or self.pack_file)
        self.max_spans = settings["max_spans"]

    @hookimpl
    def gate_check(self, request: CheckRequest) -> list[Detection]:
        found = self.pack.scan(request.prompt, Source.PROMPT, self.max_spans)
        if request.response:
            found += self.pack.scan(request.response, Source.RESPONSE, self.max_spans)
        return found


@cache
def _pack_plugin(name: str) -> type[PatternPlugin]:
    path = PACKS / f"{name}.yaml"
    spec = read_spec(path)
    if spec.pack != name:
        raise PatternError(f"pattern pack {path}: pack is {spec.pack!r}; it must equal the file's name {name!r}")
    # Named as the module attribute it is, so that pickle and repr find it again.
    return type(name, (PatternPlugin,), {"name": name, "description": spec.description, "pack_file": path,
                                         "__module__": __name__, "__qualname__": name})


def __getattr__(name: str) -> type[PatternPlugin]:
    if name.isidentifier() and (PACKS / f"{name}.yaml").is_file():
        return _pack_plugin(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def installed_packs() -> dict[str, Path]:
    """The pack file of every installed pattern plugin (a ``waltz_gate`` entry point whose class is a
    ``PatternPlugin``), by plugin name, in entry-point order."""
    classes = {name: ep.load() for name, ep in installed().items()}
    return {name: cls.pack_file for name, cls in classes.items() if isinstance(cls, type) and issubclass(cls, PatternPlugin)}
