"""Dynamic micro-batching: concurrent calls are gathered into one batch for a model.

A caller's `submit` blocks until its result is ready. A worker thread takes the first waiting item,
then keeps collecting until the batch has ``max_batch`` items or ``max_wait_s`` has passed since that
first item, and runs the batch function once. Under light load a call waits at most ``max_wait_s``;
under heavy load batches fill up and throughput grows.
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


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        max_batch: int,
        max_wait_s: float,
        on_batch: Callable[[int], None] | None = None,
        name: str = "batcher",
    ):
        self.fn, self.max_batch, self.max_wait_s, self.on_batch = fn, max_batch, max_wait_s, on_batch
        self._queue: queue.Queue[tuple[T, Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"waltz-gate-{name}", daemon=True)
        self._thread.start()

    def future(self, item: T) -> Future:
        """Queue one item; the future resolves to its result (or the batch function's exception)."""
        fut: Future = Future()
        self._queue.put((item, fut))
        return fut

    def submit(self, item: T) -> R:
        return self.future(item).result()

    def close(self) -> None:
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            if self.on_batch is not None:
                self.on_batch(len(live))
            try:
                results = self.fn([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except Exception as exc:
                for _, fut in live:
                    fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                fut.set_result(result)
