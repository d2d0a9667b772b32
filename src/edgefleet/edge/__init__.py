"""The edge node: agent (hub client, local view store, status reporter) and workload supervisor.

An agent keeps serving without the cloud: its view lives in a local SQLite,
and its workloads are child processes that outlive agent restarts.
"""
