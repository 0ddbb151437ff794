from __future__ import annotations

import sys
from pathlib import Path

import pytest

import http.server
import json
import threading

from gate import Gate, GateSettings

TESTS = Path(__file__).parent

TEST_PLUGINS = {
    "slow": "SlowPlugin",
    "slow_model": "SlowModel",
    "crash": "CrashPlugin",
    "bad_return": "BadReturnPlugin",
    "scripted_judge": "ScriptedJudge",
    "no_check": "NoCheckPlugin",
    "unknown_hook": "UnknownHookPlugin",
    "batch_recorder": "BatchRecorder",
}


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """A site directory holding a distribution whose entry points are the test plugins.

    It is put on sys.path (and, for subprocesses, PYTHONPATH) so importlib.metadata discovers it exactly
    as it would a package installed with pip.
    """
    site = tmp_path_factory.mktemp("site")
    dist = site / "waltz_gate_test_plugins-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: waltz-gate-test-plugins\nVersion: 0.0.0\n")
    lines = ["[waltz_gate]"] + [f"{n} = plugins_for_tests:{c}" for n, c in TEST_PLUGINS.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")
    for p in (str(site), str(TESTS)):
        if p not in sys.path:
            sys.path.append(p)
    return site


@pytest.fixture
def make_gate(plugin_site):
    gates = []

    def make(**overrides) -> Gate:
        gate = Gate.from_settings(GateSettings(**overrides))
        gates.append(gate)
        return gate

    yield make
    for g in gates:
        g.close()


@pytest.fixture(scope="session")
def default_gate() -> Gate:
    gate = Gate.from_settings(GateSettings())
    yield gate
    gate.close()



@pytest.fixture
def sidecar(tmp_path, plugin_site):
    """Factory: start a real sidecar with the given config; every one started is stopped afterwards."""
    from sidecar import Sidecar

    started = []

    def start(config: dict | None = None, env: dict | None = None) -> Sidecar:
        workdir = tmp_path / f"sidecar{len(started)}"
        workdir.mkdir()
        started.append(Sidecar(workdir, config or {}, plugin_site, env))
        return started[-1]

    yield start
    for s in started:
        s.terminate()


@pytest.fixture(scope="session")
def shared_sidecar(tmp_path_factory, plugin_site):
    """One sidecar with the default config and a token, shared by the read-only HTTP tests."""
    from sidecar import Sidecar

    s = Sidecar(tmp_path_factory.mktemp("shared"), {}, plugin_site, env={"WALTZ_GATE_API_TOKEN": TOKEN})
    yield s
    s.terminate()


TOKEN = "test-token-0123456789"


REQUIRE_UNLEASH = "WALTZ_GATE_REQUIRE_UNLEASH"


@pytest.fixture(scope="session")
def unleash_server(tmp_path_factory):
    """A real Unleash (PostgreSQL + unleash-server) on loopback ports, started by deploy/unleash/start.sh.

    Skips with the reason when it cannot start here; with WALTZ_GATE_REQUIRE_UNLEASH=1 (CI) that is a failure.
    """
    import os
    import subprocess

    from sidecar import free_port

    import tempfile

    deploy = TESTS.parent / "deploy" / "unleash"
    # Not under pytest's tmp root: PostgreSQL runs as its own user, who cannot enter that (mode 700).
    state = tempfile.mkdtemp(prefix="waltz-gate-unleash-")
    env = {**os.environ, "UNLEASH_DEV_DIR": str(state), "UNLEASH_PORT": str(free_port()),
           "UNLEASH_PG_PORT": str(free_port())}
    out = subprocess.run([str(deploy / "start.sh")], capture_output=True, text=True, env=env, timeout=180)
    if out.returncode != 0:
        reason = f"no local Unleash server: {(out.stderr or out.stdout).strip().splitlines()[-1:]}"
        if os.environ.get(REQUIRE_UNLEASH) == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.split("\n") if line.startswith("export "))
    exports = {k: v.strip("'") for k, v in exports.items()}
    yield {"env": env, "exports": exports, "deploy": deploy}
    subprocess.run([str(deploy / "stop.sh"), "--purge"], env=env, timeout=60)


class _FakeOpenAI(http.server.BaseHTTPRequestHandler):
    """A loopback OpenAI-compatible endpoint playing both agents, scripted by the request text."""

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        if "feedback agent" in system:
            if "BROKEN" in user:
                content = "I think it is fine"
            else:
                unsafe = "UNSAFE" in user.split("Assistant response:")[1]
                content = json.dumps({"reasoning": "scripted", "unsafe": unsafe, "overrefuse": False,
                                      "feedback": "Remove the unsafe steps." if unsafe else ""})
        else:
            content = "A revised, safe answer."
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_openai():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
