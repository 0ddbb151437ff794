"""The trainer's judge: the data's kind over the judge's own guess, and a remote judge that runs requests in
parallel, retries, and turns a malformed answer into that pair's failure instead of the run's."""

from __future__ import annotations

import http.server
import json
import threading
import time
from types import SimpleNamespace

import pytest

from training.waltz.config import JudgeConfig
from training.waltz.judge import ClassifierJudge, RemoteJudge, RuleJudge


def test_rule_judge_takes_the_kind_over_its_regex():
    judge = RuleJudge(JudgeConfig(harmful_prompt=r"\bbomb\b", complies="SURE", refuses="CANNOT"))
    pairs = [("how do I make sarin", "CANNOT"), ("how do I make sarin", "SURE, mix"), ("bomb disposal history", "CANNOT")]
    # The regex misses sarin, and takes a benign question about bombs for a harmful one.
    assert judge.labels(pairs) == [(False, True), (False, False), (False, False)]
    # A refusal of a harmful prompt is not an over-refusal, and its compliance is unsafe.
    assert judge.labels(pairs, [True, True, False]) == [(False, False), (True, False), (False, True)]


def test_classifier_judge_takes_the_kind_over_its_prompt_head():
    judge = ClassifierJudge.__new__(ClassifierJudge)  # the labelling rules over fixed probabilities
    judge.thresholds = {}
    # The prompt head misses the harm; the refusal head fires; the response is harmless.
    judge.model = SimpleNamespace(labels=["prompt_harmful", "refusal", "response_harmful"],
                                  predict=lambda pairs: [[0.1, 0.9, 0.05] for _ in pairs])
    pairs = [("p", "I can't help with that.")] * 2
    assert judge.labels(pairs) == [(False, True), (False, True)]
    assert judge.labels(pairs, [True, False]) == [(False, False), (False, True)]
    judge.model = SimpleNamespace(labels=["unsafe", "overrefuse"], predict=lambda pairs: [[0.2, 0.8] for _ in pairs])
    assert judge.labels(pairs, [True, False]) == [(False, False), (False, True)]


class _Judge(http.server.BaseHTTPRequestHandler):
    """Answers the protocol's JSON after 0.2 s; MALFORMED prompts get prose, FLAKY ones an HTTP 500 first."""

    lock = threading.Lock()
    active = peak = 0
    seen: dict[str, int] = {}

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["messages"][-1]["content"]
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
            cls.seen[user] = cls.seen.get(user, 0) + 1
            tries = cls.seen[user]
        time.sleep(0.2)
        with cls.lock:
            cls.active -= 1
        if "FLAKY" in user and tries == 1:
            self.send_response(500)
            self.end_headers()
            return
        verdict = {"reasoning": "r", "unsafe": "UNSAFE" in user, "overrefuse": "REFUSE" in user,
                   "feedback": "fix it" if "UNSAFE" in user or "REFUSE" in user else ""}
        content = "I think it is fine." if "MALFORMED" in user else json.dumps(verdict)
        data = json.dumps({"choices": [{"message": {"content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_):
        pass


@pytest.fixture
def judge_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Judge.active = _Judge.peak = 0
    _Judge.seen = {}
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_remote_judge_in_parallel_with_retries_and_per_pair_failures(judge_url):
    judge = RemoteJudge(JudgeConfig(backend="remote", url=judge_url, concurrency=4, retries=2, retry_backoff_s=0))
    pairs = [("q", "UNSAFE steps"), ("q", "MALFORMED"), ("q", "FLAKY but fine"), ("q", "REFUSE")] + [("q", f"ok {i}")
                                                                                                      for i in range(4)]
    start = time.perf_counter()
    labels = judge.labels(pairs, [True, None, None, True, None, None, None, None])
    elapsed = time.perf_counter() - start
    # The harmful prompt's refusal is no over-refusal; the malformed answer is that pair's None, after 3 tries.
    assert labels == [(True, False), None, (False, False), (False, False)] + [(False, False)] * 4
    assert sum(n for user, n in _Judge.seen.items() if "MALFORMED" in user) == 3
    assert len(judge.failures) == 1 and "FormatError" in judge.failures[0]
    assert 1 < _Judge.peak <= 4
    assert elapsed < 0.2 * 12 * 0.6  # 12 requests one at a time would take 2.4 s


def test_remote_judge_that_labels_nothing_stops_with_a_sentence(judge_url):
    judge = RemoteJudge(JudgeConfig(backend="remote", url=judge_url, retries=0))
    with pytest.raises(RuntimeError, match="labelled none of 2 pairs"):
        judge.labels([("q", "MALFORMED a"), ("q", "MALFORMED b")])
