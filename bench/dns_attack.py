"""DNS attack of issue 12: crafted compression-pointer chains against a running ``edgefleet cloud``.

How: starts a real ``edgefleet cloud`` (SQLite store in a scratch directory,
its embedded DNS on a free port), then sends ``--rate`` crafted queries a
second for ``--seconds`` (each a different variant, one byte apart, so no
answer cache helps; built by :func:`tests.security.dns_packets.pointer_chain_query`:
``--size`` bytes, over UDP or ``--tcp``), while one thread times ``GET
/healthz`` and another a legitimate DNS query, each every 50 ms, and prints
their worst and 99th-percentile latencies. Everything runs on 127.0.0.1 and
the cloud is stopped however the run ends.

    .venv/bin/python bench/dns_attack.py [--rate 50] [--seconds 3] [--size 4096] [--tcp]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for tests/

from tests.cloudproc import running_cloud
from tests.security.dns_packets import attack_while_probing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tcp", action="store_true")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as scratch,
        running_cloud(f"sqlite:///{scratch}/store.db", Path(scratch)) as cloud,
    ):
        figures = attack_while_probing(
            cloud.url, cloud.dns_port, rate=args.rate, seconds=args.seconds, size=args.size, tcp=args.tcp
        )
        print(
            f"{'TCP' if args.tcp else 'UDP'} {args.size} B at {args.rate:g}/s for {args.seconds:g} s: "
            f"{figures.summary()}"
        )


if __name__ == "__main__":
    main()
