"""The daskfleet Pulumi program, evaluated under Pulumi's mocks, for any test: ``from infra.program import ...``.

(``tests/`` is on pytest's pythonpath, so this file is the module ``infra.program``.)

    record = evaluate_program()                      # the example stack, infra/Pulumi.example.yaml
    record = evaluate_program({**example_config(), "users": ["carol=arn:aws:iam::123456789012:role/carol"]})
    record.user_data      # {"scheduler": "#cloud-config ...", "worker": "..."}: rendered user data per role
    record.user_data_of("alice"), record.instance_tags_of("alice")   # the same of one cluster of a fleet
    record.instance_tags  # {"worker": {"daskfleet:cluster": ..., "daskfleet:role": "worker", ...}, ...}
    record.parameters     # {"/daskfleet/<cluster>/spec/scheduler": "<NodeSpec JSON>", ...}: SSM parameters
    record.secrets        # {"daskfleet/<cluster>/tls/worker": '{"ca": ..., "cert": ..., "key": ...}', ...}
                          #   Secrets Manager name -> secret string, with real PEMs (keys, certs, CA)
    record.outputs        # stack outputs: schedulerAddress, dashboardUrl, bucketName, clientSecretArns,
                          #   schedulerPortForwardCommand, dashboardPortForwardCommand, ...
    record.resources      # every resource: type, name, urn, parent, provider, inputs, secret_inputs, outputs,
                          #   dependencies (URNs it waits for)
    record.calls          # every invoke (token, args); record.warnings: deprecations and engine warnings

Each call runs the program in a fresh process (about 5 s) with new keys and certificates;
evaluate once per module or session and share the record. A failing program raises
``ProgramError`` (``.kind`` is e.g. ``StackConfigError``, ``.message`` its one line).
``images=[]`` gives the mocked account no AMI; ``vpcs=``/``subnets=`` describe a network
to adopt (see ``ProgramMocks``, tests/infra/mocks.py). Full details: tests/infra/evaluate.py.
``INFRA_DIR`` is the Pulumi project directory, infra/.
"""

from __future__ import annotations

from infra.evaluate import (
    INFRA_DIR,
    MOCK_AMI_ID,
    ProgramError,
    ProgramRecord,
    ResourceRecord,
    encode_config_value,
    evaluate_program,
    example_config,
)
from infra.mocks import ProgramMocks

__all__ = [
    "INFRA_DIR", "MOCK_AMI_ID", "ProgramError", "ProgramMocks", "ProgramRecord", "ResourceRecord",
    "encode_config_value", "evaluate_program", "example_config",
]
