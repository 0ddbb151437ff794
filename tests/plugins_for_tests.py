"""Plugins used by the tests: slow, crashing, badly behaved, and a scripted Stage 2 judge.

They are installed into a temporary site directory with a real entry-point file (see conftest), so
the tests go through the same discovery path as a third-party package.
"""

import time

from gate import Detection, Severity, Source, hookimpl


class SlowPlugin:
    name, stage, description = "slow", 1, "Sleeps, then finds nothing."
    defaults = {"sleep_s": 0.2}

    @hookimpl
    def gate_setup(self, settings):
        self.sleep_s = settings["sleep_s"]

    @hookimpl
    def gate_check(self, request):
        time.sleep(self.sleep_s)
        return []


class SlowModel(SlowPlugin):
    name, stage, description = "slow_model", 2, "A Stage 2 plugin that sleeps."


class CrashPlugin:
    name, stage, description, defaults = "crash", 1, "Always raises.", {}

    @hookimpl
    def gate_check(self, request):
        raise RuntimeError("model file vanished")


class BadReturnPlugin:
    name, stage, description, defaults = "bad_return", 1, "Returns a string, not detections.", {}

    @hookimpl
    def gate_check(self, request):
        return "looks fine to me"


class ScriptedJudge:
    """Stage 2: flags a response containing UNSAFE, and one that refuses a prompt containing BENIGN."""

    name, stage, description = "scripted_judge", 2, "Scripted WaltzRL-style labels."
    defaults = {"revise": False}

    @hookimpl
    def gate_setup(self, settings):
        self.revise = settings["revise"]

    @hookimpl
    def gate_check(self, request):
        response = request.response or ""
        unsafe = "UNSAFE" in response
        overrefuse = "BENIGN" in request.prompt and response.startswith("I can't")
        if not (unsafe or overrefuse):
            return []
        return [
            Detection(
                category="scripted_judge.unsafe" if unsafe else "scripted_judge.overrefuse",
                severity=Severity.HIGH,
                source=Source.RESPONSE,
                labels={"unsafe": unsafe, "overrefuse": overrefuse},
                feedback="Remove the unsafe part." if unsafe else "Answer the question helpfully.",
                revision="A safe, helpful answer." if self.revise else None,
            )
        ]


class NoCheckPlugin:
    name, stage, description, defaults = "no_check", 1, "Implements no gate_check.", {}


class UnknownHookPlugin:
    name, stage, description, defaults = "unknown_hook", 1, "Implements a hook that does not exist.", {}

    @hookimpl
    def gate_check(self, request):
        return []

    @hookimpl
    def gate_frobnicate(self):
        return None


class BatchRecorder:
    """Stage 2 with gate_check_batch only: records the batch sizes the framework hands it."""

    name, stage, description, defaults = "batch_recorder", 2, "Records micro-batch sizes.", {"sleep_s": 0.02}
    sizes: list[int] = []

    @hookimpl
    def gate_setup(self, settings):
        self.sleep_s = settings["sleep_s"]

    @hookimpl
    def gate_check_batch(self, requests):
        type(self).sizes.append(len(requests))
        time.sleep(self.sleep_s)
        return [[] for _ in requests]
