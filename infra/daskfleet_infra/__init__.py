"""The daskfleet Pulumi program's parts: one module per AWS concern, each one ComponentResource.

config (the stack's typed configuration), lookups (account, network and image facts read
before anything is declared), network, security_groups, storage, observability, budget,
identity, pki, specs (node specs in SSM), scheduler_dns (the Lambda keeping the scheduler's
DNS record; its code in dns_updater/), compute; access (addresses and port-forwarding
commands). Only what ``pulumi up`` runs lives here; the mocks that evaluate the program
without a cloud are test code (tests/infra/mocks.py, tests/infra/evaluate.py).
"""
