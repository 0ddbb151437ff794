"""Start a real `waltz-gate serve` on 127.0.0.1 for a test, and stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

TESTS = Path(__file__).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sidecar:
    def __init__(self, workdir: Path, config: dict, plugin_site: Path | None = None, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        server = config.get("server", {})
        audit = {"path": str(workdir / "audit.jsonl"), **server.get("audit", {})}
        config = {**config, "server": {**server, "audit": audit}}
        self.audit_path = Path(config["server"]["audit"]["path"])
        cfg = workdir / "gate.yaml"
        cfg.write_text(yaml.safe_dump(config))
        full_env = {**os.environ, **(env or {})}
        if plugin_site is not None:
            full_env["PYTHONPATH"] = os.pathsep.join([str(plugin_site), str(TESTS), full_env.get("PYTHONPATH", "")])
        self.log = open(workdir / "server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gate", "serve", "--port", str(self.port), "--config", str(cfg)],
            stdout=self.log, stderr=subprocess.STDOUT, env=full_env, cwd=workdir,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.logs()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def audit_lines(self) -> list[str]:
        return self.audit_path.read_text().split("\n")[:-1] if self.audit_path.exists() else []

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
