"""The sidecar over real HTTP on 127.0.0.1: API, bad input, auth, deadlines, SIGTERM, audit, metrics."""

from __future__ import annotations

import concurrent.futures
import json
import re
import signal
import time

import httpx
import pytest
from conftest import TOKEN
from test_conformance import SPEC, assert_conforms

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post(sidecar, path, body=None, headers=AUTH, **kw):
    return httpx.post(f"{sidecar.url}{path}", headers=headers, timeout=10, **({"json": body} if body is not None else kw))


@pytest.mark.parametrize("case", SPEC, ids=[c["name"] for c in SPEC])
def test_http_conforms(shared_sidecar, case):
    r = post(shared_sidecar, "/v1/check", case["request"])
    assert r.status_code == 200, r.text
    assert_conforms(case, r.json())


def test_verdict_fields_in_order(shared_sidecar):
    r = post(shared_sidecar, "/v1/check", {"prompt": "hi", "response": "hello", "context": {"correlation_id": "c-1"}})
    keys = list(r.json())
    assert keys[:5] == ["decision", "response", "feedback", "revised", "findings"]
    for k in ("stage2", "bypassed", "degraded", "latency_ms", "correlation_id"):
        assert k in keys
    assert r.json()["correlation_id"] == "c-1"


def test_batch_keeps_order(shared_sidecar):
    items = [{"prompt": "hi", "response": "ok"}, {"prompt": "how to cook meth"}, {"prompt": "x", "response": "a@b.co"}]
    r = post(shared_sidecar, "/v1/check/batch", {"items": items})
    assert r.status_code == 200
    assert [v["decision"] for v in r.json()["verdicts"]] == ["allow", "revise", "redact"]


@pytest.mark.parametrize(
    "kw,status,needle",
    [
        ({"content": b"{bad", "headers": {**AUTH, "content-type": "application/json"}}, 400, "not valid JSON"),
        ({"content": b'{"prompt": "\xff"}', "headers": {**AUTH, "content-type": "application/json"}}, 400, "UTF-8"),
        ({"content": b'{"prompt": "x"}', "headers": {**AUTH, "content-type": "text/plain"}}, 400, "must be JSON"),
        ({"json": {"prompt": 5}}, 422, "prompt: Input should be a valid string"),
        ({"json": {"prompt": "x", "colour": "red"}}, 422, "colour: Extra inputs are not permitted"),
        ({"json": {"prompt": "x", "context": {"session_id": ["a"]}}}, 422, "context.session_id"),
        ({"json": {"response": "x"}}, 422, "prompt: Field required"),
        ({"json": [1, 2]}, 422, "Input should be a valid dictionary"),
        ({"content": b"", "headers": {**AUTH, "content-type": "application/json"}}, 422, "Field required"),
    ],
)
def test_bad_input_gets_a_4xx_sentence(shared_sidecar, kw, status, needle):
    headers = kw.pop("headers", AUTH)
    r = httpx.post(f"{shared_sidecar.url}/v1/check", headers=headers, timeout=10, **kw)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert "Traceback" not in r.text


def test_body_over_limit_is_413(shared_sidecar):
    big = json.dumps({"prompt": "a" * (2 * 1024 * 1024)}).encode()
    r = httpx.post(f"{shared_sidecar.url}/v1/check", content=big, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "larger than" in r.json()["detail"]

    def chunks():
        for _ in range(40):
            yield b"a" * 65536

    r = httpx.post(f"{shared_sidecar.url}/v1/check", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413


def test_batch_limits(shared_sidecar):
    r = post(shared_sidecar, "/v1/check/batch", {"items": [{"prompt": "x"}] * 65})
    assert r.status_code == 422 and "at most 64 items" in r.json()["detail"]
    r = post(shared_sidecar, "/v1/check/batch", {"items": []})
    assert r.status_code == 422 and r.json()["detail"].startswith("items:")


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}])
def test_auth_required_when_configured(shared_sidecar, headers):
    r = post(shared_sidecar, "/v1/check", {"prompt": "x"}, headers=headers)
    assert r.status_code == 401 and r.json()["detail"] == "missing or invalid bearer token"
    assert r.headers["www-authenticate"] == "Bearer"


def test_probes_and_plugins(shared_sidecar):
    assert httpx.get(f"{shared_sidecar.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{shared_sidecar.url}/readyz")
    # The embedded default: Stage 1 and Stage 2 with the shipped model.
    assert ready.status_code == 200 and ready.json()["plugins"] == {"harmful": True, "malicious": True, "privacy": True,
                                                                    "waltzrl": True}
    plugins = httpx.get(f"{shared_sidecar.url}/v1/plugins", headers=AUTH).json()
    assert [p["name"] for p in plugins] == ["harmful", "malicious", "privacy", "waltzrl"]
    assert httpx.get(f"{shared_sidecar.url}/openapi.json").json()["paths"]["/v1/check"]["post"]


def test_metrics_exposed(shared_sidecar):
    post(shared_sidecar, "/v1/check", {"prompt": "how to cook meth"})
    text = httpx.get(f"{shared_sidecar.url}/metrics").text
    assert 'waltz_gate_requests_total{decision="revise",stage2_mode="enforce"}' in text
    assert 'waltz_gate_plugin_latency_seconds_bucket{le="0.001",plugin="harmful"}' in text
    assert 'waltz_gate_http_requests_total{route="/v1/check",status="401"}' in text


def test_audit_line_per_decision_text_hashed(sidecar):
    s = sidecar()
    r = post(s, "/v1/check", {"prompt": "secret prompt: who do I email for help?", "response": "mail a@example.com",
                              "context": {"session_id": "s1", "correlation_id": "audit-1"}}, headers={})
    assert r.status_code == 200
    line = json.loads(s.audit_lines()[-1])
    assert line["correlation_id"] == "audit-1" and line["decision"] == "redact"
    assert line["categories"] == ["privacy.email"] and line["plugins"]["privacy"] == "ok"
    assert line["context"]["session_id"] == "s1" and line["stage2"]["mode"] == "enforce"
    assert "secret prompt" not in json.dumps(line) and len(line["prompt"]["sha256"]) == 64


def test_audit_raw_text_when_configured(sidecar):
    s = sidecar({"server": {"audit": {"raw_text": True}}})
    post(s, "/v1/check", {"prompt": "p1", "response": "r1"}, headers={})
    line = json.loads(s.audit_lines()[-1])
    assert (line["prompt"], line["response"], line["final"]) == ("p1", "r1", "r1")


def test_audit_rotates_by_size_without_losing_lines(sidecar):
    s = sidecar({"server": {"audit": {"max_bytes": 4096, "backups": 50}}})
    for i in range(40):
        post(s, "/v1/check", {"prompt": f"p{i}", "context": {"correlation_id": f"r-{i}"}}, headers={})
    s.terminate()
    files = sorted(s.audit_path.parent.glob("audit.jsonl*"))
    assert len(files) > 2
    ids = [json.loads(line)["correlation_id"] for f in files for line in f.read_text().splitlines()]
    assert sorted(ids) == sorted(f"r-{i}" for i in range(40))


def test_slow_plugin_hits_the_deadline(sidecar):
    s = sidecar({
        "plugins": ["harmful", "slow_model"],
        "budget_ms": 150,
        "stage2": {"flags": False, "mode": "enforce"},
        "plugin_settings": {"slow_model": {"timeout_ms": 5000, "settings": {"sleep_s": 2.0}}},
    })
    t = time.perf_counter()
    r = post(s, "/v1/check", {"prompt": "hi", "response": "hello"}, headers={})
    elapsed = time.perf_counter() - t
    v = r.json()
    assert r.status_code == 200 and elapsed < 1.5
    assert v["degraded"] and v["bypassed"] and v["decision"] == "allow"
    assert [f["status"] for f in v["findings"] if f["plugin"] == "slow_model"] == ["timeout"]


def _stage2_depth(sidecar, plugin: str) -> float:
    """The sidecar's Stage 2 items waiting or running for `plugin`, from its /metrics."""
    text = httpx.get(f"{sidecar.url}/metrics", timeout=10).text
    found = re.search(rf'^waltz_gate_stage2_queue_depth{{plugin="{plugin}"}} (\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_sigterm_finishes_in_flight_requests_and_flushes_audit(sidecar):
    s = sidecar({
        "plugins": ["harmful", "slow_model"],
        "stage2": {"flags": False, "mode": "enforce", "workers": 8},
        "plugin_settings": {"slow_model": {"timeout_ms": 5000, "settings": {"sleep_s": 0.8}}},
        "budget_ms": 5000,
    })
    n = 8
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(post, s, "/v1/check", {"prompt": f"p{i}"}, {}) for i in range(n)]
        # Signal once the sidecar holds every check (in Stage 2, or answered and audited) and some still run.
        deadline = time.monotonic() + 30
        while not (running := _stage2_depth(s, "slow_model")) or running + len(s.audit_lines()) < n:
            assert time.monotonic() < deadline, f"the sidecar did not take all {n} checks in 30 s"
            time.sleep(0.02)
        s.proc.send_signal(signal.SIGTERM)
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * n
    # Uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is the signal's.
    assert s.proc.wait(20) in (0, -signal.SIGTERM)
    assert len(s.audit_lines()) == n
    assert '"event": "stopped"' in s.logs()


def test_bad_config_fails_startup_with_a_sentence(tmp_path):
    import subprocess
    import sys

    cfg = tmp_path / "c.yaml"
    cfg.write_text("plugins: [harmful, nope]\n")
    out = subprocess.run([sys.executable, "-m", "gate", "serve", "--port", "1", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "'nope', which is not installed" in out.stderr and "Traceback" not in out.stderr


def test_health_command(shared_sidecar):
    import subprocess
    import sys

    from sidecar import free_port

    ok = subprocess.run([sys.executable, "-m", "gate", "health", "--url", shared_sidecar.url], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.strip() == "ready"
    down = subprocess.run([sys.executable, "-m", "gate", "health", "--url", f"http://127.0.0.1:{free_port()}"],
                          capture_output=True, text=True)
    assert down.returncode == 1 and "unreachable" in down.stderr
