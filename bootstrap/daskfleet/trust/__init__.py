"""Security: the per-cluster PKI, TLS material, peers' identities, the scheduler's and workers' guards, audit."""
