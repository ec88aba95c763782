"""Micro-batching: concurrent requests share one forward pass (the GPU path's throughput)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

import numpy as np

from dermaops.serving.backends import Outputs

Forward = Callable[[np.ndarray], Outputs]


class MicroBatcher:
    """Collect inputs for up to ``max_wait_ms`` or ``max_batch`` images, run them together."""

    def __init__(self, forward: Forward, max_batch: int, max_wait_ms: float, executor: Executor):
        self.forward = forward
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.executor = executor
        self._queue: asyncio.Queue[tuple[np.ndarray, asyncio.Future[Outputs]]] | None = None
        self._worker: asyncio.Task[None] | None = None

    async def __call__(self, batch: np.ndarray) -> Outputs:
        loop = asyncio.get_running_loop()
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._drain())
        done: asyncio.Future[Outputs] = loop.create_future()
        await self._queue.put((batch, done))
        return await done

    async def _drain(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            size = len(items[0][0])
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    item = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
                except TimeoutError:
                    break
                items.append(item)
                size += len(item[0])
            await self._run(items)

    async def _run(self, items: list[tuple[np.ndarray, asyncio.Future[Outputs]]]) -> None:
        loop = asyncio.get_running_loop()
        joined = np.concatenate([batch for batch, _ in items])
        try:
            outputs = await loop.run_in_executor(self.executor, self.forward, joined)
        except Exception as e:  # every waiting request learns of the failure
            for _, done in items:
                if not done.done():
                    done.set_exception(e)
            return
        start = 0
        for batch, done in items:
            if not done.done():
                logits, embedding = outputs
                end = start + len(batch)
                done.set_result((logits[start:end], embedding[start:end]))
            start += len(batch)
