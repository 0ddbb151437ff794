"""Stage 2 rollout flags through the official Unleash SDK: which mode applies to a request, and why.

Flags (names operators and scripts rely on):
- ``waltz-gate.stage2.enforce``: a flexibleRollout strategy, sticky on a key the caller supplies
  (session_id by default; user_id or tenant by config) with a fixed groupId, so a session enabled at 10%
  stays enabled at 50%. Enabled for a request -> Stage 2 is enforced.
- ``waltz-gate.stage2.kill``: enabled -> Stage 2 is off everywhere at once.
A request not in the rollout runs Stage 2 in shadow mode (its would-be verdict goes to the audit log and
metrics only) unless ``stage2.shadow`` is off.

Sources: with ``UNLEASH_URL`` and ``UNLEASH_API_TOKEN`` set, the SDK polls that server, starting from the
flag definitions (gate/unleash/flags.json: 0%, shadow only, until the server answers) and keeping the
last-known flags if the server goes away (a metric and a log line say so). Without them there is nothing
to roll out: it runs offline from gate/unleash/offline.json, which enforces Stage 2 for every request.
``WALTZ_GATE_FLAGS_BOOTSTRAP`` names another bootstrap file for either case.

Evaluation is in memory and must add no measurable latency (an SDK call costs ~25 us, p99 ~90 us). When
the enforce flag is one plain flexibleRollout strategy (no constraints or segments) sticky on our key,
the bucket is computed as Unleash defines it, murmur3_32("groupId:key", seed 0) % 100 + 1 <= rollout,
from the flag state in the SDK's own cache (tests check parity with the SDK). Any other shape of the
flag goes through the SDK, memoised per key. Both are refreshed whenever the SDK reports new flags.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
from pathlib import Path

import mmh3

from gate import logs
from gate.config import ConfigError, Stage2Settings
from gate.metrics import GateMetrics
from gate.types import CheckRequest, Stage2Mode

ENFORCE_FLAG = "waltz-gate.stage2.enforce"
KILL_FLAG = "waltz-gate.stage2.kill"
URL_ENV, TOKEN_ENV, BOOTSTRAP_ENV = "UNLEASH_URL", "UNLEASH_API_TOKEN", "WALTZ_GATE_FLAGS_BOOTSTRAP"
FLAGS_DIR = Path(__file__).resolve().parent / "unleash"
DEFINITIONS = FLAGS_DIR / "flags.json"  # what `rollout init` creates; a server-backed SDK starts from it
OFFLINE_BOOTSTRAP = FLAGS_DIR / "offline.json"  # no server: Stage 2 enforced
# The caller's key -> the Unleash context field the flexibleRollout stickiness names.
MEMO_LIMIT = 200_000
STICKINESS = {"session_id": "sessionId", "user_id": "userId", "tenant": "tenant"}

log = logs.get("waltz_gate.flags")


class _FetchWatcher(logging.Handler):
    """Turns the SDK's log records about fetching flags into a metric and one log line per outage."""

    def __init__(self, metrics: GateMetrics):
        super().__init__(logging.INFO)
        self.metrics, self.failing, self._attempt_open = metrics, False, False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Getting feature flag"):
            if self._attempt_open and self.failing:  # the previous attempt ended without a failure
                self.failing = False
                self.metrics.flags_server_ok.set(1)
                log.info("flags server reachable again")
            self._attempt_open = True
        elif "feature fetch failed" in message:
            self._attempt_open = False
            self.metrics.flags_fetch_failures.inc()
            self.metrics.flags_server_ok.set(0)
            if not self.failing:
                self.failing = True
                log.warning("flags server unreachable; serving the last-known flags", detail=message[:200])


class Stage2Flags:
    """Resolves the Stage 2 mode per request. Call `close` when done."""

    def __init__(self, settings: Stage2Settings, metrics: GateMetrics, bootstrap: Path | None = None):
        from UnleashClient import UnleashClient
        from UnleashClient.cache import FEATURES_URL, FileCache
        from UnleashClient.events import UnleashEventType
        from UnleashClient.utils import InstanceAllowType

        self.settings = settings
        self.key = settings.stickiness
        self._field = STICKINESS[self.key]
        url, token = os.environ.get(URL_ENV), os.environ.get(TOKEN_ENV)
        self.source = "server" if url and token else "bootstrap"
        if url and not token:
            raise ConfigError(f"{URL_ENV} is set but {TOKEN_ENV} is not; the Unleash server needs a client token.")
        default = DEFINITIONS if self.source == "server" else OFFLINE_BOOTSTRAP
        path = bootstrap or Path(os.environ.get(BOOTSTRAP_ENV) or default)
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the flags bootstrap file {path} ({BOOTSTRAP_ENV}): {exc.strerror}.") from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"flags bootstrap file {path} is not valid JSON: {exc.msg}.") from None
        if not isinstance(state, dict) or not isinstance(state.get("features"), list):
            raise ConfigError(f"flags bootstrap file {path} is not in Unleash's client features format.")

        self._memo: dict[str, bool] = {}
        self._kill: bool | None = None
        self._lock = threading.Lock()
        self._cache_dir = tempfile.TemporaryDirectory(prefix="waltz-gate-flags-")
        self._features_key = FEATURES_URL
        cache = self._cache = FileCache("waltz-gate", directory=self._cache_dir.name)
        cache.bootstrap_from_dict(state)
        self._rollout = self._plain_rollout()

        def on_event(event) -> None:
            if event.event_type in (UnleashEventType.FETCHED, UnleashEventType.READY):
                self.invalidate()

        self.client = UnleashClient(
            url=url or "http://127.0.0.1:1/api",  # never contacted offline
            app_name="waltz-gate",
            custom_headers={"Authorization": token} if token else {},
            refresh_interval=settings.flags_refresh_s,
            disable_metrics=self.source == "bootstrap",
            disable_registration=self.source == "bootstrap",
            cache=cache,
            event_callback=on_event,
            multiple_instance_mode=InstanceAllowType.SILENTLY_ALLOW,
        )
        self._watcher = None
        if self.source == "server":
            self._watcher = _FetchWatcher(metrics)
            sdk_log = logging.getLogger("UnleashClient")
            sdk_log.addHandler(self._watcher)
            sdk_log.setLevel(logging.INFO)
            sdk_log.propagate = False  # its records reach us through the watcher, not the JSON log
            metrics.flags_server_ok.set(1)
        self.client.initialize_client(fetch_toggles=self.source == "server")
        log.info("flags ready", source=self.source, bootstrap=str(path), stickiness=self.key)

    def invalidate(self) -> None:
        with self._lock:
            self._memo = {}
            self._kill = None
            self._rollout = self._plain_rollout()

    def _plain_rollout(self) -> tuple[int, str] | None:
        """(rollout %, groupId) when the enforce flag is a plain flexibleRollout on our key, else None."""
        try:
            features = json.loads(self._cache.get(self._features_key))["features"]
        except (TypeError, ValueError, KeyError):
            return None
        flag = next((f for f in features if f.get("name") == ENFORCE_FLAG), None)
        if flag is None:
            return None
        if not flag.get("enabled", False):
            return 0, ENFORCE_FLAG
        strategies = [st for st in flag.get("strategies", []) if not st.get("disabled")]
        if len(strategies) != 1:
            return None
        (st,) = strategies
        params = st.get("parameters") or {}
        if st.get("name") != "flexibleRollout" or st.get("constraints") or st.get("segments") or params.get("stickiness") != self._field:
            return None
        try:
            return int(params.get("rollout", "0")), params.get("groupId") or ENFORCE_FLAG
        except ValueError:
            return None

    def resolve(self, request: CheckRequest) -> tuple[Stage2Mode, str]:
        kill = self._kill
        if kill is None:
            kill = self._kill = self.client.is_enabled(KILL_FLAG, {})
        if kill:
            return Stage2Mode.OFF, f"kill switch {KILL_FLAG} is on"
        value = getattr(request.context, self.key)
        plain = self._rollout
        if plain is not None and plain[0] >= 100:
            return self._enforced(True)  # everyone, with or without a key to bucket on
        if value is None:
            return self._outside(f"no {self.key} to bucket on")
        if plain is not None:
            rollout, group = plain
            enforced = mmh3.hash(f"{group}:{value}", 0, signed=False) % 100 + 1 <= rollout
            return self._enforced(enforced)
        memo = self._memo  # one read: a concurrent invalidate swaps in a new dict
        enforced = memo.get(value)
        if enforced is None:
            if len(memo) >= MEMO_LIMIT:  # bounded memory however many sessions pass through
                memo = self._memo = {}
            context = {"sessionId": request.context.session_id, "userId": request.context.user_id,
                       "properties": {"tenant": request.context.tenant or ""}}
            enforced = memo[value] = self.client.is_enabled(ENFORCE_FLAG, context)
        return self._enforced(enforced)

    def _enforced(self, enforced: bool) -> tuple[Stage2Mode, str]:
        if enforced:
            return Stage2Mode.ENFORCE, f"{ENFORCE_FLAG} on for this {self.key}"
        return self._outside(f"{self.key} not in the {ENFORCE_FLAG} rollout")

    def _outside(self, why: str) -> tuple[Stage2Mode, str]:
        if self.settings.shadow:
            return Stage2Mode.SHADOW, f"{why}; shadow"
        return Stage2Mode.OFF, why

    def close(self) -> None:
        self.client.destroy()
        if self._watcher is not None:
            logging.getLogger("UnleashClient").removeHandler(self._watcher)
        self._cache_dir.cleanup()
