"""A sampled, structured (JSON lines) access log.

How: :meth:`AccessLog.record` draws one random number per request and, for
the sampled share, appends one JSON object to a buffered file (or stderr);
the buffer is flushed once a second by the worker and at exit. Fields:
``ts``, ``client``, ``method``, ``host``, ``target``, ``status``, ``bytes``,
``cache`` (HIT, MISS, STALE, REVALIDATED, PASS, ERROR), ``ms`` and ``node``.

Why sampling: at tens of thousands of requests per second a full log costs
more CPU than serving the hits; operators keep e.g. 1% for debugging and
rely on the metrics for totals.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path
from typing import IO

from edgefleet.cache.wire.http1 import Request


class AccessLog:
    def __init__(self, path: Path | None, sample: float, node: str) -> None:
        self.sample = sample
        self.node = node
        self._file: IO[str] = path.open("a", buffering=65536) if path is not None else sys.stderr
        self._owned = path is not None
        self._random = random.random

    def record(self, request: Request, client: str, status: int, sent: int, cache: str, seconds: float) -> None:
        if self.sample < 1.0 and self._random() >= self.sample:
            return
        line = {
            "ts": round(time.time(), 3),
            "client": client,
            "method": request.method,
            "host": request.host,
            "target": request.target,
            "status": status,
            "bytes": sent,
            "cache": cache,
            "ms": round(seconds * 1000, 3),
            "node": self.node,
        }
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self.flush()
        if self._owned:
            self._file.close()
