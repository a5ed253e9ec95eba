"""daskfleet's AWS invariants as a Pulumi CrossGuard policy pack.

``POLICIES`` is what ``infra/policy/__main__.py`` serves to the Pulumi CLI;
``check_resources`` runs the same policies over plain resource records (a mocked program's)
so the program's own resources can be held to them in tests.
"""

from .pack import PACK_NAME, POLICIES
from .records import Violation, camel_case_keys, check_resources

__all__ = ["PACK_NAME", "POLICIES", "Violation", "camel_case_keys", "check_resources"]
