"""Progress lines on stderr: plain lines (no carriage returns), so logs and CI read well."""

from __future__ import annotations

import sys
import time


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
