"""The edge node: agent (hub client, local view store, status reporter) and workload supervisor.

An agent keeps serving without the cloud: its view lives in a local SQLite,
and its workloads are child processes that outlive agent restarts.

Structure: decisions are pure and take the time as an argument
(:mod:`~edgefleet.edge.lifecycle` for a workload's life: adopt, replace,
restart, readiness; :mod:`~edgefleet.edge.backoff` for every retry
schedule; the peer votes of :mod:`~edgefleet.edge.peerhealth`); the asyncio
modules execute them (:mod:`~edgefleet.edge.instances`,
:mod:`~edgefleet.edge.supervisor`, :mod:`~edgefleet.edge.hubclient`,
:mod:`~edgefleet.edge.agent`). Code outside this package uses
:mod:`edgefleet.edge.local` (a node directory from the same host: ``edgefleet
up``/``down``) or the agent's entry points, never the supervisor's modules.
See docs/architecture.md, "Edge autonomy and workloads".
"""
