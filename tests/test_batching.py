"""Stage 2 capacity: micro-batch workers, admission control, expiry of queued work, and what the gate says."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

import pytest

from gate import CheckRequest, Gate, GateSettings
from gate.batching import DeadlineExceeded, MicroBatcher, Overloaded


class SlowModel:
    """A batch function that takes `per_item` seconds per item and records what it ran."""

    def __init__(self, per_item: float):
        self.per_item, self.ran, self.threads = per_item, [], set()

    def __call__(self, items):
        self.threads.add(threading.get_ident())
        time.sleep(self.per_item * len(items))
        self.ran += list(items)
        return [f"done {i}" for i in items]


def test_workers_run_batches_side_by_side():
    model = SlowModel(0.05)
    b = MicroBatcher(model, max_batch=1, max_wait_s=0.0, workers=4)
    start = time.perf_counter()
    futures = [b.future(i) for i in range(8)]
    assert [f.result(timeout=5) for f in futures] == [f"done {i}" for i in range(8)]
    elapsed = time.perf_counter() - start
    b.close()
    assert len(model.threads) == 4 and elapsed < 8 * 0.05  # four at a time, not one after another


def test_an_item_that_cannot_make_its_deadline_is_refused_at_once():
    model = SlowModel(0.2)
    b = MicroBatcher(model, max_batch=1, max_wait_s=0.0, workers=1)
    b.future(0).result(timeout=5)  # measures the time per item
    queued = [b.future(i, time.perf_counter() + 10) for i in range(1, 6)]  # ~1 s of work ahead
    t = time.perf_counter()
    with pytest.raises(Overloaded, match="estimated wait"):
        b.future(99, time.perf_counter() + 0.5)
    assert time.perf_counter() - t < 0.25  # answered at once, not at the deadline
    assert b.future(100, time.perf_counter() + 10).result(timeout=5) == "done 100"  # one with time left is taken
    for f in queued:
        f.result(timeout=5)
    b.close()
    assert 99 not in model.ran


def test_queued_work_past_its_deadline_or_abandoned_is_dropped_unrun():
    model = SlowModel(0.1)
    expired = []
    b = MicroBatcher(model, max_batch=1, max_wait_s=0.0, workers=1, on_expired=expired.append)
    busy = b.future("busy")  # holds the only worker for 0.1 s
    time.sleep(0.01)
    late = b.future("late", time.perf_counter() + 0.02)  # admitted: no time per item measured yet
    gone = b.future("gone")
    gone.cancel()  # its caller gave up
    busy.result(timeout=5)
    with pytest.raises(DeadlineExceeded):
        late.result(timeout=5)
    b.future("next").result(timeout=5)
    b.close()
    assert model.ran == ["busy", "next"] and sum(expired) == 2


def test_the_gate_sheds_under_overload_and_says_so(plugin_site):
    # One worker, a plugin taking 50 ms: at a 300 ms deadline (and the admission margin) about four can
    # wait; the rest are shed at once with the stage's failure policy (open: bypassed), never a silent allow.
    settings = GateSettings(plugins=["batch_recorder"], budget_ms=300,
                            plugin_settings={"batch_recorder": {"timeout_ms": 300, "settings": {"sleep_s": 0.05}}},
                            stage2={"flags": False, "mode": "enforce", "workers": 1, "max_batch": 1, "max_wait_ms": 0})
    gate = Gate.from_settings(settings)
    gate.check(CheckRequest(prompt="warm", response="up"))  # the time per item is measured
    verdicts = [None] * 24
    threads = [threading.Thread(target=lambda i=i: verdicts.__setitem__(i, gate.check(CheckRequest(prompt=f"p{i}", response="r"))))
               for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    registry = gate.metrics.registry
    shed = [v for v in verdicts if any(f.status == "shed" for f in v.findings)]
    assert shed and all(v.degraded and v.bypassed for v in shed)
    ok = [v for v in verdicts if not v.degraded]
    assert len(ok) >= 3  # the ones that could make it were judged
    assert registry.get_sample_value("waltz_gate_stage2_shed_total", {"plugin": "batch_recorder"}) == len(shed)
    assert registry.get_sample_value("waltz_gate_stage2_busy_seconds_total", {"plugin": "batch_recorder"}) > 0
    assert registry.get_sample_value("waltz_gate_stage2_workers", {"plugin": "batch_recorder"}) == 1
    assert registry.get_sample_value("waltz_gate_stage2_queue_depth", {"plugin": "batch_recorder"}) == 0
    gate.close()


def test_the_sidecar_answers_a_shed_check_with_503_and_retry_after(sidecar):
    s = sidecar({"plugins": ["batch_recorder"], "budget_ms": 300,
                 "plugin_settings": {"batch_recorder": {"timeout_ms": 300, "settings": {"sleep_s": 0.1}}},
                 "stage2": {"flags": False, "mode": "enforce", "workers": 1, "max_batch": 1, "max_wait_ms": 0}})
    assert httpx.post(f"{s.url}/v1/check", json={"prompt": "warm", "response": "up"}).status_code == 200

    def post(i: int) -> httpx.Response:
        return httpx.post(f"{s.url}/v1/check", json={"prompt": f"p{i}", "response": "r"}, timeout=10)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(post, range(16)))
    shed = [r for r in answers if r.status_code == 503]
    assert shed and {r.status_code for r in answers} == {200, 503}
    assert all(int(r.headers["retry-after"]) >= 1 and "shed" in r.json()["detail"] for r in shed)
    # Every check, shed or judged, has its audit line, and the shed ones say so.
    lines = [json.loads(line) for line in s.audit_lines()]
    assert len(lines) == 17
    assert sum(line["plugins"].get("batch_recorder") == "shed" for line in lines) == len(shed)
