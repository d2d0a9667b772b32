"""``python -m edgefleet`` is the ``edgefleet`` command (the agent starts built-in workloads this way)."""

from edgefleet.cli.main import app

app(prog_name="edgefleet")
