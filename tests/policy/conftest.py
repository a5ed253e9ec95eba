"""The policy pack lives in infra/policy, run by the Pulumi CLI as a directory: import it from there."""

import sys
from pathlib import Path

POLICY_PACK_DIR = Path(__file__).resolve().parents[2] / "infra" / "policy"
if str(POLICY_PACK_DIR) not in sys.path:
    sys.path.insert(0, str(POLICY_PACK_DIR))
