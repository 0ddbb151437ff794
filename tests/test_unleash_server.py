"""The Stage 2 rollout against a real Unleash server and a real sidecar, all on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest
import yaml

SESSIONS = [f"session-{i}" for i in range(10_000)]


def cli(server, *args, extra_env=None):
    env = {**os.environ, **server["exports"], **(extra_env or {})}
    return subprocess.run([sys.executable, "-m", "gate", "rollout", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def enforced(sidecar, sessions=SESSIONS) -> set[str]:
    """Sessions whose checks run Stage 2 in enforce mode, through the sidecar's batch endpoint."""
    out = set()
    for i in range(0, len(sessions), 64):
        chunk = sessions[i : i + 64]
        items = [{"prompt": "q", "response": "fine", "context": {"session_id": s}} for s in chunk]
        r = httpx.post(f"{sidecar.url}/v1/check/batch", json={"items": items}, timeout=30)
        assert r.status_code == 200, r.text
        out |= {s for s, v in zip(chunk, r.json()["verdicts"], strict=True) if v["stage2"]["mode"] == "enforce"}
    return out


def wait_for(predicate, timeout=60.0):  # generous: the flag server and the sidecar share 2 loaded cores in CI
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.3)
    return False


@pytest.fixture(scope="module")
def rollout_sidecar(unleash_server, tmp_path_factory, plugin_site):
    from sidecar import Sidecar

    assert cli(unleash_server, "init").returncode == 0  # idempotent: the flags may exist already
    env = {"UNLEASH_URL": unleash_server["exports"]["UNLEASH_URL"],
           "UNLEASH_API_TOKEN": unleash_server["exports"]["UNLEASH_API_TOKEN"]}
    s = Sidecar(tmp_path_factory.mktemp("rollout"), {
        "plugins": ["harmful", "scripted_judge"],
        "stage2": {"flags_refresh_s": 1},
    }, plugin_site, env=env)
    yield s
    s.terminate()


def test_init_creates_the_flags_and_is_idempotent(unleash_server):
    first = cli(unleash_server, "init")
    assert first.returncode == 0 and "waltz-gate.stage2.enforce: created" in first.stdout
    again = cli(unleash_server, "init")
    assert again.returncode == 0 and "exists, kept" in again.stdout
    status = cli(unleash_server, "status", "--json")
    assert status.returncode == 0, status.stderr
    assert '"percent": 0' in status.stdout and '"kill_switch": false' in status.stdout


def test_ten_percent_then_fifty_is_sticky(unleash_server, rollout_sidecar):
    assert cli(unleash_server, "set", "10").returncode == 0
    assert wait_for(lambda: enforced(rollout_sidecar, SESSIONS[:300]))
    at10 = enforced(rollout_sidecar)
    assert abs(len(at10) / len(SESSIONS) - 0.10) <= 0.015
    assert cli(unleash_server, "set", "50").returncode == 0
    assert wait_for(lambda: len(enforced(rollout_sidecar, SESSIONS[:300])) > 100)
    at50 = enforced(rollout_sidecar)
    assert abs(len(at50) / len(SESSIONS) - 0.50) <= 0.015
    assert at10 <= at50


def test_kill_switch_turns_stage2_off_everywhere(unleash_server, rollout_sidecar):
    assert cli(unleash_server, "kill", "on").returncode == 0
    assert wait_for(lambda: not enforced(rollout_sidecar, SESSIONS[:500]))
    r = httpx.post(f"{rollout_sidecar.url}/v1/check", json={"prompt": "q", "context": {"session_id": "a"}})
    assert r.json()["stage2"]["mode"] == "off" and "kill switch" in r.json()["stage2"]["reason"]
    assert cli(unleash_server, "kill", "off").returncode == 0
    assert wait_for(lambda: enforced(rollout_sidecar, SESSIONS[:300]))


def test_guard_refuses_to_advance_and_rolls_back(unleash_server, rollout_sidecar, tmp_path):
    for i in range(150):  # traffic the guards can read: a third of it revised
        body = {"prompt": "q", "response": "UNSAFE" if i % 3 == 0 else "fine", "context": {"session_id": f"g{i}"}}
        httpx.post(f"{rollout_sidecar.url}/v1/check", json=body)
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({
        "steps": [{"percent": 0}, {"percent": 10}, {"percent": 50}, {"percent": 100}],
        "guards": {"metrics_urls": [f"{rollout_sidecar.url}/metrics"], "min_checks": 100, "max_block_revise_rate": 0.0},
    }))
    assert cli(unleash_server, "set", "50").returncode == 0
    dry = cli(unleash_server, "advance", "--plan", str(plan), "--dry-run")
    assert dry.returncode == 3 and "guard block/revise rate tripped" in dry.stderr
    refused = cli(unleash_server, "advance", "--plan", str(plan))
    assert refused.returncode == 3 and "refused to advance from 50%" in refused.stderr and "(limit 0.00%)" in refused.stderr
    rolled = cli(unleash_server, "advance", "--plan", str(plan), "--rollback")
    assert rolled.returncode == 3 and "rolled back 50% -> 10%" in rolled.stderr
    assert '"percent": 10' in cli(unleash_server, "status", "--json", "--plan", str(plan)).stdout
    plan.write_text(plan.read_text().replace("max_block_revise_rate: 0.0", "max_block_revise_rate: 0.9"))
    ok = cli(unleash_server, "advance", "--plan", str(plan))
    assert ok.returncode == 0 and "10% -> 50%" in ok.stdout


def test_dwell_time_is_enforced(unleash_server, rollout_sidecar, tmp_path):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"steps": [{"percent": 0}, {"percent": 10, "min_dwell_hours": 12},
                                              {"percent": 50}, {"percent": 100}]}))
    assert cli(unleash_server, "set", "10").returncode == 0
    out = cli(unleash_server, "advance", "--plan", str(plan))
    assert out.returncode == 2 and "held 0.0 h of the 12 h" in out.stderr


def test_sidecar_keeps_last_known_flags_when_the_server_stops(unleash_server, rollout_sidecar):
    assert cli(unleash_server, "set", "10").returncode == 0
    assert wait_for(lambda: 0 < len(enforced(rollout_sidecar, SESSIONS[:1000])) < 200)
    before = enforced(rollout_sidecar, SESSIONS[:2000])
    pid = int((unleash_server["env"]["UNLEASH_DEV_DIR"] + "/unleash.pid") and
              open(unleash_server["env"]["UNLEASH_DEV_DIR"] + "/unleash.pid").read())
    os.kill(pid, 9)
    metrics = lambda: httpx.get(f"{rollout_sidecar.url}/metrics").text  # noqa: E731
    assert wait_for(lambda: "waltz_gate_flags_server_ok 0.0" in metrics())
    assert enforced(rollout_sidecar, SESSIONS[:2000]) == before  # still serving, same decisions
    assert httpx.get(f"{rollout_sidecar.url}/readyz").status_code == 200
    assert "flags server unreachable" in rollout_sidecar.logs()
