"""Controllers of the cloud: loops that compare observed state with the rules and converge.

How: each controller is a pure decision (data in, the change to make out)
and a small asyncio shell that reads (through the
:class:`~edgefleet.cloud.registry.Registry`, or the hub's in-memory index
where the controller would otherwise list the whole fleet every round),
applies the decision with resourceVersion preconditions, and waits. They
hold no state the store does not (or state that is safe to lose), so a
restart or a new leader simply carries on. Each runs once per fleet under
:class:`~edgefleet.cloud.leader.LeaderElection` (``/system/leader/<name>``).

- :mod:`.nodelifecycle`: marks nodes NotReady, then Unknown, when their
  heartbeats stop; never touches spec or workloads. Every 5 s (default).
- :mod:`.purges`: counts node reports into Purge and Prefetch status and
  completes them. Every 2 s (default).
- :mod:`.siteactivation`: turns ``alwaysOn: false`` sites on and off with
  the DNS demand of their region (hysteresis, drain time). Every 5 s
  (default).
- :mod:`.sitestatus`: each Site's healthy and total nodes (the GSLB's
  health rule) and its measured load (loadGbps, load) from the nodes'
  cache reports; load figures written at most every 10 s per site
  (default) and only when they moved by more than 5 %.
- :mod:`.workloads`: keeps WorkloadRevisions, decides which revision each
  node runs (rollouts, pins; the rule is :mod:`edgefleet.cloud.rollouts`),
  drains nodes for the GSLB during their step, writes Workload.status.
  Woken by index changes, at most every 0.05 s, and every second while a
  rollout runs.
- :mod:`.certificates`: Certificate.status from the PEM (names, validity,
  the Domains using it), Warning Events once per certificate content before
  and at expiry, and about Domains naming a missing or non-matching
  Certificate; the ``edgefleet_certificate_not_after_seconds`` gauge. Every
  5 s (default).
- :mod:`.loop`: :func:`~.loop.run_periodically`, the one periodic loop of
  the periodic ones (round, log a store failure, wait, again). The workload
  controller has its own loop because it is woken by changes, not a timer.

See docs/architecture.md, "Resources" and "Edge autonomy and workloads".
"""
