"""The scaling policy's defaults, shared by the spec (``policy``), the stack's keys and the local launcher's flags.

Plain numbers, no pydantic: the command modules import them at load time (``daskfleet.cli``).
"""

from __future__ import annotations

DEFAULT_INTERVAL_S = 5.0
DEFAULT_COOLDOWN_S = 60.0
DEFAULT_MAX_STEP_DOWN = 10
DEFAULT_SCALE_DOWN_TARGETS = 6
DEFAULT_LAUNCH_TIMEOUT_S = 600.0
DEFAULT_IDLE_TIMEOUT_S = 1200.0
DEFAULT_NO_CLIENT_TIMEOUT_S = 300.0
DEFAULT_BOOT_FAILURE_LIMIT = 3
DEFAULT_BOOT_FAILURE_WINDOW_S = 1800.0
#: The local scheduler decides every second (it costs nothing); local workers register within seconds.
LOCAL_INTERVAL_S = 1.0
