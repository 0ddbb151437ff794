"""Dynamic micro-batching with deadlines and admission control, for Stage 2 models.

Worker threads take the first waiting item, keep collecting until the batch has ``max_batch`` items or
``max_wait_s`` has passed since that first item, and run the batch function once. Under light load a
call waits at most ``max_wait_s``; under heavy load batches fill up and throughput grows.

Overload is handled in two places, so that work nobody waits for never takes the cores:
- admission: `future` refuses an item (raises `Overloaded`) when the queue ahead of it, at the measured
  time per item, cannot finish before the item's deadline; the caller answers at once instead of waiting
  for a timeout;
- expiry: an item whose deadline has passed, or whose caller gave up (cancelled its future), is dropped
  before its batch runs.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_EWMA = 0.2  # weight of the newest batch in the time-per-item estimate
# Admit only with room to spare: the time per item rises under load before the estimate catches up, and an
# item admitted that then times out costs the cores more than one refused at once.
ADMISSION_MARGIN = 1.25


# Overloaded and DeadlineExceeded are signals to the engine (it turns them into shed/timeout findings under
# the stage policy), not WaltzGateErrors: they must never surface as a user error.
class Overloaded(RuntimeError):
    """The queue cannot finish this item before its deadline."""

    def __init__(self, wait_s: float, left_s: float):
        super().__init__(f"estimated wait {wait_s * 1000:.0f} ms exceeds the {max(0.0, left_s) * 1000:.0f} ms left")


class DeadlineExceeded(TimeoutError):
    """The item's deadline passed while it was queued: it was dropped, not run."""


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        max_batch: int,
        max_wait_s: float,
        workers: int = 1,
        on_batch: Callable[[int, float], None] | None = None,
        on_expired: Callable[[int], None] | None = None,
        name: str = "batcher",
    ):
        self.fn, self.max_batch, self.max_wait_s, self.workers = fn, max_batch, max_wait_s, workers
        self.on_batch, self.on_expired = on_batch, on_expired
        self._queue: queue.Queue[tuple[T, Future, float] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._running = 0  # items in batches being run
        self._per_item_s = 0.0  # measured run time per item (EWMA over batches)
        self._threads = [
            threading.Thread(target=self._run, name=f"waltz-gate-{name}-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        """Items waiting or running."""
        return self._queue.qsize() + self._running

    def drain_s(self) -> float:
        """How long the work queued now takes, at the measured time per item."""
        return self.depth / self.workers * self._per_item_s

    def estimated_wait_s(self) -> float:
        """How long a new item would take to come back: the items that must finish before a worker is free
        for it, shared among the workers, then its own run."""
        ahead = max(0, self.depth + 1 - self.workers)
        return (ahead / self.workers + 1) * self._per_item_s

    def future(self, item: T, deadline: float | None = None) -> Future:
        """Queue one item due by ``deadline`` (time.perf_counter()); raises Overloaded when it cannot make it.
        The future resolves to its result, the batch function's exception, or DeadlineExceeded."""
        if deadline is not None:
            wait, left = self.estimated_wait_s(), deadline - time.perf_counter()
            if wait * ADMISSION_MARGIN > left:
                raise Overloaded(wait, left)
        fut: Future = Future()
        self._queue.put((item, fut, deadline if deadline is not None else float("inf")))
        return fut

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _collect(self) -> list[tuple[T, Future, float]] | None:
        first = self._queue.get()
        if first is None:
            return None
        batch = [first]
        until = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                nxt = self._queue.get(timeout=max(0.0, until - time.monotonic()))
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # finish this batch, then stop
                break
            batch.append(nxt)
        return batch

    def _run(self) -> None:
        while (batch := self._collect()) is not None:
            now = time.perf_counter()
            live, expired = [], 0
            for item, fut, deadline in batch:
                if not fut.set_running_or_notify_cancel():
                    expired += 1  # its caller gave up
                elif deadline <= now:
                    fut.set_exception(DeadlineExceeded("deadline passed while queued"))
                    expired += 1
                else:
                    live.append((item, fut))
            if expired and self.on_expired is not None:
                self.on_expired(expired)
            if not live:
                continue
            with self._lock:
                self._running += len(live)
            start = time.perf_counter()
            try:
                results = self.fn([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except Exception as exc:
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            finally:
                elapsed = time.perf_counter() - start
                with self._lock:
                    self._running -= len(live)
                    per_item = elapsed / len(live)
                    self._per_item_s = per_item if not self._per_item_s else (1 - _EWMA) * self._per_item_s + _EWMA * per_item
                if self.on_batch is not None:
                    self.on_batch(len(live), elapsed)
            for (_, fut), result in zip(live, results, strict=True):
                fut.set_result(result)
