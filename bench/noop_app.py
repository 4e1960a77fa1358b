"""The framework's floors: a Faust app that does nothing per event, in two ways.

    CX_BROKER=... CX_APP_ID=... CX_TOPIC_PREFIX=... CX_WEB_PORT=... python -m bench.noop_app
    ... python -m bench.noop_app --batches

Both use the worker's Faust settings (stream.app.faust_settings: broker, group timeouts, and
the embedded broker's workarounds only with CX_EMBEDDED_BROKER) and its process settings
(stream.memory: the allocator's, and the garbage collector thresholds that made the worker a
third faster) and read the same input topics; the only work is adding to a counter.

- Per event (the baseline of the issue's targets): a stock faust.App with Faust's own
  per-record path, `async for event in stream.events()`.
- `--batches`: cx-stream's transport (stream/transport.py), which hands the input records to a
  handler a fetch at a time, with a handler that only counts them. What the worker's hot path
  costs on top of this is cx-stream's own work, not Faust's.

GET /count answers {"events": n, "assigned": partitions}, so the benchmark knows when it is
ready (partitions assigned) and when it is done.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import faust
from faust.types import Message

from stream.app import faust_settings
from stream.config import Settings, from_env
from stream.events import TOPICS
from stream.memory import prepare_long_running_process
from stream.transport import App


def create_noop_app(settings: Settings, batches: bool = False) -> faust.App:
    options = {**faust_settings(settings), "store": "memory://"}  # it has no tables
    app = (App if batches else faust.App)(f"{settings.topic_prefix}{settings.app_id}", **options)
    names = [settings.topic(name) for name in TOPICS]
    inputs = app.topic(
        *names, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )
    seen = 0

    async def noop(stream: Any) -> None:
        nonlocal seen
        async for _event in stream.events():
            seen += 1

    async def noop_batch(batch: Sequence[Message]) -> None:
        nonlocal seen
        seen += len(batch)

    async def count(view: Any, request: Any) -> Any:
        assigned = len(app.assignor.assigned_actives())
        return view.json({"events": seen, "assigned": assigned})

    if isinstance(app, App):
        app.correct_end_offsets = settings.embedded_broker
        app.topics.add(inputs)
        app.batch_topics = frozenset(names)
        app.batch_handler = noop_batch
    else:
        # called, not used as decorators: Faust's decorators are untyped
        app.agent(inputs, name="noop")(noop)
    app.page("/count")(count)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.noop_app", description=__doc__)
    parser.add_argument("--batches", action="store_true", help="cx-stream's batch dispatch")
    batches = parser.parse_args().batches
    prepare_long_running_process()
    settings = from_env()
    worker = faust.Worker(
        create_noop_app(settings, batches),
        loglevel=settings.log_level,
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
