"""The daskfleet Pulumi program's parts: one module per AWS concern, each one ComponentResource.

config (the stack's typed configuration, its fleet of clusters resolved), lookups (account,
network and image facts read before anything is declared), limits (policy sizes, checked before
anything is declared). Shared by the fleet: network, security_groups, storage. Each cluster's,
under cluster (one component per cluster): observability, budget, identity, pki, specs (node
specs in SSM), scheduler_dns (the Lambda keeping the scheduler's DNS record; its code in
dns_updater/), compute, environments, membership (the member policy), wake (the stack's own
cluster's wake policy); data_access (what a cluster reaches in S3 and through the key, for its
nodes, its members and the bucket's backstop); access (addresses and port-forwarding commands). Only what ``pulumi up`` runs lives here; the mocks that evaluate the program
without a cloud are test code (tests/infra/mocks.py, tests/infra/evaluate.py).
"""
