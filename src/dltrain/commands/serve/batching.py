"""Adaptive micro-batching: requests that arrive while a batch runs are predicted together next.

Each model has one prediction thread (its layers keep per-call buffers, so one forward pass at
a time) fed by a queue. The event loop only queues work and awaits it, so it is never blocked
by a prediction. There is no fixed wait: a request that finds the thread idle starts at once,
and those arriving meanwhile form the next batch, whose size grows with the load (one row per
request when idle; dozens under 32 concurrent clients). A batch merges the requests' cells
into one ``predict_cells`` call, so the matrix products run once for all of them; a request
with a bad cell is then found by predicting each request alone, so it fails alone."""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from ...api import Run
from ...predictions import Predictions, predict_cells


@dataclass
class _Job:
    future: asyncio.Future
    cells: dict | None = None  # rows to batch with others
    rows: int = 0
    call: Callable[[], Any] | None = None  # work that runs alone on the model's thread (a CSV body)


@dataclass
class Batcher:
    name: str
    run: Run
    max_batch_rows: int = 4096
    batches: int = 0  # counters, for the bench and the tests
    batched_requests: int = 0
    _jobs: deque = field(default_factory=deque)
    _wakeup: asyncio.Event | None = None
    _task: asyncio.Task | None = None
    _thread: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._wakeup = asyncio.Event()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"dltrain-serve-{self.name}")
        self._task = asyncio.get_running_loop().create_task(self._serve_forever())

    async def stop(self) -> None:
        """After the last request: stop the loop and the thread."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._thread is not None:
            self._thread.shutdown(wait=True)

    async def predict(self, cells: dict, rows: int) -> Predictions:
        """``predict_cells`` for these cells, batched with whatever else is waiting."""
        return await self._submit(_Job(asyncio.get_running_loop().create_future(), cells=cells, rows=rows))

    async def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the model's thread, alone, in turn with the batches."""
        return await self._submit(_Job(asyncio.get_running_loop().create_future(), call=function))

    async def _submit(self, job: _Job):
        assert self._wakeup is not None, "start() the batcher first"
        self._jobs.append(job)
        self._wakeup.set()
        return await job.future

    async def _serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._take()
            outcomes = await loop.run_in_executor(self._thread, self._run, batch)
            for job, (ok, value) in zip(batch, outcomes):
                if job.future.done():  # the client went away
                    continue
                if ok:
                    job.future.set_result(value)
                else:
                    job.future.set_exception(value)

    def _take(self) -> list[_Job]:
        """The next batch: one call alone, or the waiting row jobs up to ``max_batch_rows`` rows."""
        first = self._jobs.popleft()
        if first.call is not None:
            return [first]
        batch, rows = [first], first.rows
        while self._jobs and self._jobs[0].call is None and rows + self._jobs[0].rows <= self.max_batch_rows:
            job = self._jobs.popleft()
            batch.append(job)
            rows += job.rows
        return batch

    def _run(self, batch: list[_Job]) -> list[tuple[bool, Any]]:
        """On the model's thread: (True, result) or (False, exception) for each job of the batch."""
        self.batches += 1
        self.batched_requests += len(batch)
        if len(batch) > 1:
            try:
                merged = {
                    name: list(itertools.chain.from_iterable(job.cells[name] for job in batch))  # type: ignore[index]
                    for name in self.run.schema.feature_names
                }
                predictions = predict_cells(self.run, merged)
            except Exception:  # some request has a bad cell: predict each alone, so only that one fails
                pass
            else:
                starts = list(itertools.accumulate([0] + [job.rows for job in batch]))
                return [(True, predictions.part(start, stop)) for start, stop in zip(starts, starts[1:])]
        return [self._alone(job) for job in batch]

    def _alone(self, job: _Job) -> tuple[bool, Any]:
        try:
            if job.call is not None:
                return True, job.call()
            return True, predict_cells(self.run, job.cells)  # type: ignore[arg-type]
        except Exception as error:  # handed to the request that asked; a bug there is its 500
            return False, error
