"""A worker never takes its machine down: its memory limit enforced from outside its process.

distributed's nanny ends its worker once the process's RSS exceeds ``distributed.worker.memory.terminate``
of its memory limit; daskfleet's workers run without a nanny, so their supervisor does it instead: the local
cluster's supervisor, and on an instance the agent's own watcher process backed by the unit's cgroup limits.
``policy`` holds the pure decisions (the limit, the threshold, the unit's figures), ``watch`` the watchers,
``scheduler`` what the scheduler does with a kill (audit, metric, a KilledWorker that names the limit).
"""
