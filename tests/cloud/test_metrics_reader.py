"""The metrics-reader role: from the tokens file and the token API, allowed the relay's two operations only."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.cloud.auth import Forbidden, Principal, Role, authorize_metrics_reader, load_tokens_file
from edgefleet.cloud.metricsrelay import RELAY_OPERATIONS, require_metrics_reader

TOKEN = "abc123.0123456789abcdef0123456789abcdef"


def test_a_tokens_file_may_hold_a_metrics_reader(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f"tokens:\n  - name: prometheus\n    role: metrics-reader\n    token: {TOKEN}\n")
    (_, principal), *_ = load_tokens_file(path).values()
    assert principal == Principal("prometheus", Role.METRICS_READER)


def test_a_metrics_reader_may_call_the_relay_operations_and_nothing_else() -> None:
    reader = Principal("prometheus", Role.METRICS_READER)
    for allowed in RELAY_OPERATIONS:
        authorize_metrics_reader(reader, allowed, RELAY_OPERATIONS, "GET /x")
    for operation in ("list_nodes", "read_secret", "workload_logs", None):
        with pytest.raises(Forbidden, match="metrics-reader token may only scrape"):
            authorize_metrics_reader(reader, operation, RELAY_OPERATIONS, "GET /x")


@pytest.mark.parametrize("role", [Role.VIEWER, Role.NODE])
def test_viewers_and_nodes_may_not_scrape(role: Role) -> None:
    with pytest.raises(Forbidden, match="metrics-reader"):
        require_metrics_reader(Principal("someone", role))
    require_metrics_reader(Principal("admin", Role.ADMIN))
    require_metrics_reader(Principal("prometheus", Role.METRICS_READER))
