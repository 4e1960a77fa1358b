"""The framework's floor: a Faust agent that does nothing per event.

    CX_BROKER=... CX_APP_ID=... CX_TOPIC_PREFIX=... CX_WEB_PORT=... python -m bench.noop_app

Stock faust.App with the worker's Faust settings (stream.app.faust_settings: broker, group
timeouts of the embedded broker, consumer defaults) and its process settings (stream.memory:
the allocator's, and the garbage collector thresholds that made the worker a third faster),
the same input topics, and Faust's own per-record path:
`async for event in stream.events()`. The only per-event work is adding one to a counter.
GET /count answers {"events": n, "assigned": partitions}, so the benchmark knows when it is
ready (partitions assigned) and when it is done. The worker's own transport is not used: it
replaces exactly this per-record path, which is what the baseline is for.
"""

from __future__ import annotations

from typing import Any

import faust

from stream.app import faust_settings
from stream.config import Settings, from_env
from stream.events import TOPICS
from stream.memory import prepare_long_running_process


def create_noop_app(settings: Settings) -> faust.App:
    options = {**faust_settings(settings), "store": "memory://"}  # it has no tables
    app = faust.App(f"{settings.topic_prefix}{settings.app_id}", **options)
    inputs = app.topic(
        *(settings.topic(name) for name in TOPICS),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    seen = 0

    async def noop(stream: Any) -> None:
        nonlocal seen
        async for _event in stream.events():
            seen += 1

    async def count(view: Any, request: Any) -> Any:
        assigned = len(app.assignor.assigned_actives())
        return view.json({"events": seen, "assigned": assigned})

    # called, not used as decorators: Faust's decorators are untyped
    app.agent(inputs, name="noop")(noop)
    app.page("/count")(count)
    return app


def main() -> None:
    prepare_long_running_process()
    settings = from_env()
    worker = faust.Worker(
        create_noop_app(settings),
        loglevel=settings.log_level,
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
