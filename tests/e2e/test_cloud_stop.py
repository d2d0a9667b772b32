"""A cloud stopped (SIGTERM) with a watch open ends the watch cleanly instead of cutting it after a grace period.

One real ``edgefleet cloud`` process. A client holds a watch of Sites and
sees a write come through; then the cloud is sent SIGTERM. The watch must
end as it does at its ``timeoutSeconds``: a complete response body (the
client reads to the end without a protocol error), after the events it was
sent, and the process exits without uvicorn's "timeout graceful shutdown
exceeded" (what happened when open watches held the shutdown for 3 s and
were then cancelled mid-stream; cloud/draining.py).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path
from typing import Any

import httpx

from tests.cloudproc import CloudProcess
from tests.fleet import API, site_doc
from tests.waiting import wait_until


class WatchReader:
    """Reads a watch stream to its end in a thread: the lines, and the error that ended it if any."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self.done = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines():
                if line:
                    self.lines.append(json.loads(line))
        except Exception as exc:  # what a cut stream raises (httpx.RemoteProtocolError)
            self.error = exc
        finally:
            self.done.set()

    def names(self) -> list[str]:
        return [str(line["object"]["metadata"]["name"]) for line in self.lines]


def test_a_stop_ends_open_watches_cleanly(tmp_path: Path) -> None:
    cloud = CloudProcess(f"sqlite:///{tmp_path}/store.db", tmp_path, extra_args=["--dns-listen", "off"]).start()
    try:
        with cloud.client() as api, api.stream("GET", f"{API}/sites?watch=true&allowWatchBookmarks=false") as watch:
            assert watch.status_code == 200
            reader = WatchReader(watch)
            assert api.post(f"{API}/sites", json=site_doc("before-stop")).status_code == 201
            wait_until(lambda: "before-stop" in reader.names(), 10, what="the write seen on the watch")
            assert cloud.proc is not None
            os.killpg(cloud.proc.pid, signal.SIGTERM)
            cloud.proc.wait(timeout=15)
            assert reader.done.wait(10), "the watch ended with the process"
        assert reader.error is None, f"the watch was cut, not ended: {reader.error!r}"
        assert reader.names() == ["before-stop"]
        assert "graceful shutdown exceeded" not in cloud.log(), cloud.log()[-2000:]
    finally:
        cloud.stop()
