"""Controllers of the cloud: loops that compare observed state with the rules and converge.

How: each controller is a pure decision (data in, the change to make out)
and a small asyncio loop that reads through the
:class:`~edgefleet.cloud.registry.Registry`, applies the decision with
resourceVersion preconditions, and sleeps. They hold no state the store does
not, so a restart or a new leader simply carries on. Controllers that must
run once per fleet run under :class:`~edgefleet.cloud.leader.LeaderElection`.

- :mod:`.nodelifecycle`: marks nodes NotReady, then Unknown, when their
  heartbeats stop; never touches spec or workloads.
- :mod:`.purges`: counts node reports into Purge and Prefetch status and
  completes them.
- :mod:`.siteactivation`: turns ``alwaysOn: false`` sites on and off with
  the DNS demand of their region.
- :mod:`.workloads`: keeps WorkloadRevisions, decides which revision each
  node runs (rollouts, pins; the rule is :mod:`edgefleet.cloud.rollouts`),
  drains nodes for the GSLB during their step, writes Workload.status.
"""
