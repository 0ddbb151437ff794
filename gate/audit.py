"""The audit log: one JSON line per decision, appended durably, rotated by size.

Every line is written and flushed to the operating system before the verdict is returned, so a crash
of the process loses nothing. ``fsync`` decides when the OS is made to write it to disk: ``always``
(before the verdict returns), ``interval`` (a background thread, at most ``fsync_interval_s`` after;
the default) or ``never`` (the OS decides). Closing the log always fsyncs. Prompt and response text are stored as sha256 digests and lengths unless ``raw_text`` is on.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gate.types import CheckRequest, Status, Verdict


class AuditSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    path: Path = Path("waltz-gate-audit/audit.jsonl")
    fsync: Literal["always", "interval", "never"] = "interval"
    fsync_interval_s: float = Field(default=1.0, gt=0)
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1024)
    backups: int = Field(default=10, ge=1)
    raw_text: bool = False


def _digest(text: str | None) -> dict | None:
    if text is None:
        return None
    return {"sha256": hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest(), "chars": len(text)}


def record(request: CheckRequest, verdict: Verdict, raw_text: bool) -> dict:
    """The audit line for one decision."""
    ctx = request.context
    out = {
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "correlation_id": verdict.correlation_id,
        "decision": verdict.decision.value,
        "categories": sorted({f.category for f in verdict.findings if f.status == Status.OK and f.category}),
        "plugins": {name: status.value for name, status in verdict.plugin_statuses.items()},
        "bypassed": verdict.bypassed,
        "degraded": verdict.degraded,
        "stage2": {
            "mode": verdict.stage2.mode.value,
            "reason": verdict.stage2.reason,
            "labels": verdict.stage2.labels,
            "would_decide": verdict.stage2.would_decide.value if verdict.stage2.would_decide else None,
            "shadow_categories": sorted({f.category for f in verdict.shadow_findings if f.category}),
        },
        "timings": verdict.timings,
        "context": {"session_id": ctx.session_id, "user_id": ctx.user_id, "tenant": ctx.tenant, "agent": ctx.agent},
    }
    if raw_text:
        out["prompt"], out["response"], out["final"] = request.prompt, request.response, verdict.response
    else:
        out["prompt"], out["response"] = _digest(request.prompt), _digest(request.response)
    return out


class AuditLog:
    """Thread-safe appender with size-based rotation (audit.jsonl -> audit.jsonl.1 -> ...)."""

    def __init__(self, settings: AuditSettings):
        self.settings = settings
        self.path = settings.path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for the life of the log
        self._size = self._fh.tell()
        self.written = 0
        self._dirty = False
        self._closed = threading.Event()
        if settings.fsync == "interval":
            threading.Thread(target=self._sync_loop, name="waltz-gate-audit-fsync", daemon=True).start()

    def write(self, line: dict) -> None:
        data = (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogatepass")
        with self._lock:
            if self._size and self._size + len(data) > self.settings.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)
            self.written += 1
            self._dirty = True
            if self.settings.fsync == "always":
                os.fsync(self._fh.fileno())
                self._dirty = False

    def _sync_loop(self) -> None:
        while not self._closed.wait(self.settings.fsync_interval_s):
            with self._lock:  # fsync itself runs outside the lock, so writers never wait on the disk
                fd = self._fh.fileno() if self._dirty and not self._fh.closed else None
                self._dirty = False
            if fd is not None:
                try:
                    os.fsync(fd)
                except OSError:
                    pass  # rotated or closed meanwhile: both fsync the file themselves

    def writable(self) -> bool:
        return not self._fh.closed and os.access(self.path.parent, os.W_OK)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if not self._fh.closed:
                self._fh.flush()
                os.fsync(self._fh.fileno())
                self._fh.close()

    def _rotate(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        for i in range(self.settings.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._fh = open(self.path, "ab")  # noqa: SIM115
        self._size = 0
