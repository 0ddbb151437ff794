from __future__ import annotations

import json
import threading

import pytest

from gate import CheckRequest
from gate.audit import AuditLog, AuditSettings, record


@pytest.mark.parametrize("fsync", ["always", "interval", "never"])
def test_concurrent_writers_lose_nothing(tmp_path, fsync):
    log = AuditLog(AuditSettings(path=tmp_path / "a.jsonl", fsync=fsync, fsync_interval_s=0.01, max_bytes=20_000))
    threads = [threading.Thread(target=lambda t=t: [log.write({"t": t, "i": i}) for i in range(250)]) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.close()
    lines = [json.loads(x) for f in tmp_path.glob("a.jsonl*") for x in f.read_text().splitlines()]
    assert sorted((x["t"], x["i"]) for x in lines) == [(t, i) for t in range(4) for i in range(250)]
    assert log.written == 1000


def test_rotation_keeps_the_configured_backups(tmp_path):
    log = AuditLog(AuditSettings(path=tmp_path / "a.jsonl", max_bytes=1024, backups=2))
    for i in range(200):
        log.write({"i": i, "pad": "x" * 40})
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl", "a.jsonl.1", "a.jsonl.2"]


def test_record_hashes_text_and_lists_plugin_status(default_gate):
    request = CheckRequest(prompt="what is the support line?", response="call (415) 555-2671")
    line = record(request, default_gate.check(request), raw_text=False)
    assert line["decision"] == "redact"
    assert line["plugins"] == {"harmful": "ok", "malicious": "ok", "privacy": "ok", "waltzrl": "ok"}
    assert "support line" not in json.dumps(line) and line["prompt"]["chars"] == 25


def test_record_fields(default_gate):
    request = CheckRequest(prompt="hi", response="hello")
    assert list(record(request, default_gate.check(request), raw_text=False)) == [
        "ts", "correlation_id", "decision", "categories", "plugins", "bypassed", "degraded", "stage2", "timings",
        "context", "prompt", "response",
    ]  # the flag state is not a field: stage2.mode and stage2.reason say what the flags decided
