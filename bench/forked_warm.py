"""Experiment: a full warm whose listing batches are read and written by forked workers.

Not cachewarm's code path: a measurement of the "workers forked after the hot query"
lever before building it (docs/performance.md). It does what `cachewarm run` does for a
full warm from an empty Redis (lock, hot query, slot states, listings through the
guard, hot list), except that after the hot query it forks `workers - 1` children and
each process, the parent too, reads and writes its own contiguous share of the hot ids
over connections of its own. The parent publishes the hot list once every child exited
0. No miss queue, changed query, replica, progress bar or run log.

    python bench/forked_warm.py CONFIG WORKERS    # run by bench/overlap.py
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from array import array
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from cachewarm import lock, output
from cachewarm.config import Settings, load_settings
from cachewarm.mysql.source import Source
from cachewarm.orchestrate import hot_json
from cachewarm.pipeline import reader_for, writer_for
from cachewarm.runlog import RunRecord
from cachewarm.store.connect import Client, connect, describe
from cachewarm.store.pipe import ScriptPipe
from cachewarm.store.reads import server_time_ms
from cachewarm.store.slots import SlotStates, learn_states
from cachewarm.store.writer import publish_hot


def share(
    settings: Settings, ids: Sequence[int], fence: lock.Fence, states: SlotStates, deadline: float
) -> tuple[set[int], int]:
    """Read and write `ids` over new connections; (ids left out of the hot list, written)."""
    where = describe(settings.redis)
    record = RunRecord(run_id="bench", command="run")
    with contextlib.ExitStack() as stack:
        src = stack.enter_context(contextlib.closing(Source(settings.mysql, deadline=deadline)))
        client = stack.enter_context(contextlib.closing(connect(settings.redis)))
        pipe = ScriptPipe(client, where=where, lock_key=fence.lock_key)
        stack.callback(pipe.close)
        writer = writer_for(settings, pipe, fence, states)
        reader = reader_for(settings, src, record, deadline, hot=len(ids))
        reader.run(ids, writer, evidence=None, where=where)
        pipe.finish()
        return reader.absent | writer.skipped, writer.totals.written


def fork_share(
    settings: Settings, ids: Sequence[int], fence: lock.Fence, states: SlotStates, deadline: float
) -> tuple[int, int]:
    """A child doing share(); (pid, read end of the pipe its result comes back on)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(read_fd)
            absent, written = share(settings, ids, fence, states, deadline)
            with os.fdopen(write_fd, "wb") as out:  # written, then the absent ids
                out.write(array("Q", [written, *absent]).tobytes())
            code = 0
        finally:
            os._exit(code)  # never the parent's cleanup: its lock and connections stay its own
    os.close(write_fd)
    return pid, read_fd


def main() -> int:
    settings = load_settings(Path(sys.argv[1]))
    workers = int(sys.argv[2])
    output.configure(verbose=False, quiet=False, fmt="auto", secrets=[])  # as under cron
    keys, where = settings.keys, describe(settings.redis)

    def connected() -> contextlib.closing[Client]:
        return contextlib.closing(connect(settings.redis))

    with lock.run_lock(settings, "bench", connected) as (client, fence):
        deadline = time.monotonic() + settings.run.max_seconds
        start_ms = server_time_ms(client, where=where)
        fence = replace(fence, deadline_ms=start_ms + int(settings.run.max_seconds * 1000))
        with contextlib.closing(Source(settings.mysql, deadline=deadline)) as src:
            ids = src.hot_ids(settings.warm.hot_query, settings.warm.limit)
        pipe = ScriptPipe(client, where=where, lock_key=fence.lock_key)
        states = learn_states(pipe, keys, ids)
        bounds = [len(ids) * w // workers for w in range(workers + 1)]
        children = [
            fork_share(settings, ids[bounds[w] : bounds[w + 1]], fence, states, deadline)
            for w in range(1, workers)
        ]
        absent, written = share(settings, ids[: bounds[1]], fence, states, deadline)
        for pid, read_fd in children:
            with os.fdopen(read_fd, "rb") as results:
                data = results.read()
            _, status = os.waitpid(pid, 0)
            if status or not data:
                raise SystemExit(f"worker {pid} failed (wait status {status})")
            got = array("Q", data)
            written += got[0]
            absent.update(got[1:])
        hot, size = hot_json(ids, absent)
        publish_hot(
            pipe,
            keys,
            fence,
            hot,
            expire_at_ms=start_ms + settings.warm.ttl * 1000,
            meta={"size": str(size)},
        )
        pipe.finish()
        pipe.close()
    if written != len(ids):
        raise SystemExit(f"wrote {written} of {len(ids)} listings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
