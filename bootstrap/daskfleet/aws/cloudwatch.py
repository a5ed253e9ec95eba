"""Forward audit lines to CloudWatch Logs, so the trail outlives the scheduler's instance."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

#: PutLogEvents takes at most 10,000 events per call; far fewer are ever waiting.
MAX_BATCH = 1000
#: Lines held while CloudWatch cannot be reached; the oldest are dropped (and counted) beyond it.
MAX_PENDING = 50_000


class CloudWatchLines:
    """Ships lines to one log stream from a background thread; never blocks the caller."""

    def __init__(self, client: Any, group: str, stream: str, *, flush_s: float = 2.0):
        self.client, self.group, self.stream, self.flush_s = client, group, stream, flush_s
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue()
        self._pending: list[tuple[int, str]] = []
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="audit-to-cloudwatch", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        self._queue.put((int(time.time() * 1000), line))

    def close(self, timeout: float = 10.0) -> None:
        """Send what is waiting, then stop."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        self._create_stream()
        stopping = False
        while not stopping:
            deadline = time.monotonic() + self.flush_s
            while len(self._pending) < MAX_BATCH and (remaining := deadline - time.monotonic()) > 0:
                try:
                    item = self._queue.get(timeout=remaining)
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                self._pending.append(item)
            self._flush()

    def _create_stream(self) -> None:
        try:
            self.client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except self.client.exceptions.ResourceAlreadyExistsException:
            pass
        except (ClientError, BotoCoreError) as exc:
            log.warning("audit: cannot create log stream %s in %s: %s", self.stream, self.group, exc)

    def _flush(self) -> None:
        if not self._pending:
            return
        batch = self._pending[:MAX_BATCH]
        try:
            self.client.put_log_events(
                logGroupName=self.group, logStreamName=self.stream,
                logEvents=[{"timestamp": stamp, "message": line} for stamp, line in batch],
            )
        except (ClientError, BotoCoreError) as exc:
            log.warning("audit: %d line(s) wait for CloudWatch Logs (%s)", len(self._pending), exc)
            if len(self._pending) > MAX_PENDING:
                self.dropped += len(self._pending) - MAX_PENDING
                del self._pending[: len(self._pending) - MAX_PENDING]
            return
        del self._pending[: len(batch)]
