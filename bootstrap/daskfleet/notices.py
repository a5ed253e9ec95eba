"""Tell connected clients something: a warning their ``distributed.Client`` shows (its "warn" topic)."""

from __future__ import annotations

import pickle
import time
from typing import Any


def tell_client(scheduler: Any, client: str, text: str) -> None:
    """Show ``text`` as a warning in one connected client."""
    comm = scheduler.client_comms.get(client)
    if comm is not None:
        comm.send({"op": "event", "topic": "warn", "event": (time.time(), {"message": pickle.dumps(text)})})


def tell_all_clients(scheduler: Any, text: str) -> None:
    """Show ``text`` as a warning in every connected client."""
    for client in list(scheduler.client_comms):
        tell_client(scheduler, client, text)
