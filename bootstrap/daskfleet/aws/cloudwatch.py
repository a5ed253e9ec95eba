"""Forward audit lines to CloudWatch Logs, so the trail outlives the scheduler's instance.

Lines wait in a bounded buffer until CloudWatch Logs takes them: a failed call is tried again
after a jittered backoff, so an outage delays lines and loses none, as long as it ends before the
buffer fills. Beyond ``max_pending`` lines the oldest are dropped and counted (``dropped``); the
next shipment starts with a line saying how many, and the local file still has every line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from .calls import Backoff, error_code

log = logging.getLogger(__name__)

#: PutLogEvents takes at most 10,000 events and 1 MB per call; far fewer are ever waiting.
MAX_BATCH = 1000
MAX_BATCH_BYTES = 900_000
#: CloudWatch counts 26 bytes per event besides its message.
EVENT_OVERHEAD = 26
#: One call's events must lie within 24 hours of each other.
MAX_SPAN_MS = 23 * 3600 * 1000
#: Lines held while CloudWatch cannot be reached; the oldest are dropped (and counted) beyond it.
MAX_PENDING = 50_000
#: Between attempts while CloudWatch Logs fails: 1 s, 2 s, 4 s ... up to 30 s, jittered.
RETRY_BACKOFF = Backoff(base=1.0, cap=30.0)
#: The stream is missing (e.g. its creation failed during an outage): create it, then send again.
MISSING_STREAM = "ResourceNotFoundException"


class CloudWatchLines:
    """Ships lines to one log stream from a background thread; never blocks the caller."""

    def __init__(
        self, client: Any, group: str, stream: str, *, flush_s: float = 2.0, max_pending: int = MAX_PENDING,
        backoff: Backoff = RETRY_BACKOFF,
    ):
        self.client, self.group, self.stream, self.flush_s = client, group, stream, flush_s
        self.max_pending, self.backoff = max_pending, backoff
        #: (sequence number, timestamp in ms, line), oldest first.
        self._pending: deque[tuple[int, int, str]] = deque()
        self._next = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        #: Lines dropped (oldest first) because the buffer was full; ``sent`` lines were taken by CloudWatch.
        self.dropped = 0
        self.sent = 0
        self._unannounced = 0
        self._stream_ready = False
        self._thread = threading.Thread(target=self._run, name=f"lines-to-cloudwatch-{stream}", daemon=True)
        self._thread.start()

    def __call__(self, line: str) -> None:
        with self._lock:
            self._pending.append((self._next, int(time.time() * 1000), line))
            self._next += 1
            if len(self._pending) > self.max_pending:
                self._pending.popleft()
                self.dropped += 1
                self._unannounced += 1

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is waiting (trying again within ``timeout``), then stop; what is left is counted as dropped."""
        self._stop.set()
        self._thread.join(timeout)
        with self._lock:
            left = len(self._pending)
            self.dropped += left
            self._pending.clear()
        if left or self.dropped:
            log.warning("%s: %d line(s) did not reach CloudWatch Logs (%d dropped in all); the local file has them",
                        self.stream, left, self.dropped)

    def _run(self) -> None:
        failures = 0
        while True:
            if failures:  # CloudWatch Logs failed: back off, closing or not (``close`` stops waiting at its timeout)
                time.sleep(self.backoff.delay(failures - 1))
                stopping = self._stop.is_set()
            else:
                stopping = self._stop.wait(self.flush_s)
            failures = 0 if self._ship() else failures + 1
            if stopping and not failures:
                return

    def _ship(self) -> bool:
        """Send everything waiting, batch by batch; False after a failed call (the lines stay)."""
        while True:
            batch, notice = self._batch()
            if not batch and not notice:
                return True
            events = ([{"timestamp": batch[0][1] if batch else int(time.time() * 1000), "message": notice}]
                      if notice else [])
            events += [{"timestamp": stamp, "message": line} for _, stamp, line in batch]
            try:
                if not self._stream_ready:
                    self._create_stream()
                self.client.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=events)
            except (ClientError, BotoCoreError) as exc:
                if error_code(exc) == MISSING_STREAM:
                    self._stream_ready = False
                log.warning("%s: %d line(s) wait for CloudWatch Logs (%s)", self.stream, self.pending, exc)
                return False
            self._sent(batch, bool(notice))

    def _batch(self) -> tuple[list[tuple[int, int, str]], str]:
        """The oldest waiting lines that fit one call, and a line counting the drops not announced yet ("" if none)."""
        with self._lock:
            notice = ""
            if self._unannounced:
                notice = json.dumps({"event": "lines-dropped", "count": self._unannounced,
                                     "reason": f"CloudWatch Logs could not be reached while more than "
                                               f"{self.max_pending} lines waited; the local file has them"},
                                    sort_keys=True)
            size = len(notice) + EVENT_OVERHEAD
            batch: list[tuple[int, int, str]] = []
            for entry in self._pending:
                size += len(entry[2].encode()) + EVENT_OVERHEAD
                full = len(batch) + bool(notice) >= MAX_BATCH or size > MAX_BATCH_BYTES
                if full or (batch and entry[1] - batch[0][1] > MAX_SPAN_MS):
                    break
                batch.append(entry)
            return batch, notice

    def _sent(self, batch: list[tuple[int, int, str]], announced: bool) -> None:
        """Forget the lines CloudWatch took (some may have been dropped meanwhile: they are gone already)."""
        with self._lock:
            if announced:
                self._unannounced = 0
            last = batch[-1][0] if batch else -1
            while self._pending and self._pending[0][0] <= last:
                self._pending.popleft()
                self.sent += 1

    def _create_stream(self) -> None:
        try:
            self.client.create_log_stream(logGroupName=self.group, logStreamName=self.stream)
        except ClientError as exc:
            if error_code(exc) != "ResourceAlreadyExistsException":
                raise
        self._stream_ready = True
