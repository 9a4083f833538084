"""Batching of schema events into the spool (the writer thread's storage half).

The recorder's writer thread turns each queued ``(event_cls, t_ns_abs, fields)`` into a
schema-v1 event with :meth:`BatchWriter.add` (assigning ``seq`` in arrival order and
converting ``t_ns`` to nanoseconds since the session start) and calls
:meth:`BatchWriter.flush` on each of its ticks (every ``flush_interval_s / 2``, so nothing
waits longer than ``flush_interval_s`` = 0.5 s, DESIGN.md §9) and on stop. One transaction per
batch, never one per event (OpenAdapt's one-transaction-per-event is the anti-pattern).

It also measures the delay from each event's capture time to the commit of its batch (the
"event to durable spool" delay of the benchmark) in a 1 ms histogram.
"""

from __future__ import annotations

import time
from typing import Any

from ..schema.events import Event
from ..spool.store import SessionWriter

_HIST_MAX_MS = 60_000


class DelayHistogram:
    """Counts of delays in 1 ms buckets (0 … 60 s; longer delays land in the last bucket)."""

    def __init__(self) -> None:
        self.counts = [0] * (_HIST_MAX_MS + 1)
        self.n = 0
        self.max_ns = 0

    def add(self, delay_ns: int) -> None:
        """Record one delay in nanoseconds."""
        ms = min(max(delay_ns, 0) // 1_000_000, _HIST_MAX_MS)
        self.counts[ms] += 1
        self.n += 1
        if delay_ns > self.max_ns:
            self.max_ns = delay_ns

    def quantile_ms(self, q: float) -> float | None:
        """Upper edge (ms) of the bucket holding quantile ``q`` (0..1), or ``None`` if empty."""
        if self.n == 0:
            return None
        target = q * self.n
        acc = 0
        for ms, c in enumerate(self.counts):
            acc += c
            if acc >= target and c:
                return float(ms + 1)
        return float(_HIST_MAX_MS)


class BatchWriter:
    """Builds events and appends them to a :class:`SessionWriter` in batches.

    ``start_ns``: absolute monotonic ns of the session start (``t_ns`` 0).
    ``flush_interval_ns``: maximum time an event waits in memory.
    Not thread-safe: used by the writer thread only.
    """

    def __init__(self, spool: SessionWriter, start_ns: int, flush_interval_ns: int) -> None:
        self.spool = spool
        self.start_ns = start_ns
        self.flush_interval_ns = flush_interval_ns
        self.next_seq = spool.next_seq
        self._pending: list[Event] = []
        self._pending_abs: list[int] = []
        self._oldest_ns: int | None = None
        self.stored = 0
        self.stored_by_kind: dict[str, int] = {}
        self.batches = 0
        self.malformed = 0
        self.last_error: str | None = None
        self.last_t_ns = 0
        self.delays = DelayHistogram()

    def add(self, event_cls: type[Event], t_ns_abs: int, fields: dict[str, Any]) -> Event | None:
        """Build one event (next ``seq``; ``t_ns`` relative to the session start, clamped at 0)
        and queue it for the next batch. A payload that does not fit the class is counted in
        ``malformed`` (reported by health) and returns ``None`` — no ``seq`` is spent on it."""
        t_rel = max(0, t_ns_abs - self.start_ns)
        try:
            ev = event_cls(seq=self.next_seq, t_ns=t_rel, **fields)
        except TypeError as exc:
            self.malformed += 1
            self.last_error = f"malformed {event_cls.__name__} payload: {exc}"
            return None
        self.next_seq += 1
        self._pending.append(ev)
        self._pending_abs.append(t_ns_abs)
        if self._oldest_ns is None:
            self._oldest_ns = time.monotonic_ns()
        if t_rel > self.last_t_ns:
            self.last_t_ns = t_rel
        return ev

    @property
    def pending(self) -> int:
        """Events built but not yet durable."""
        return len(self._pending)

    def flush_deadline(self) -> int | None:
        """Absolute monotonic ns by which the pending batch must be flushed, or ``None``."""
        if self._oldest_ns is None:
            return None
        return self._oldest_ns + self.flush_interval_ns

    def flush_due(self, now_ns: int) -> bool:
        """True if the oldest pending event has waited ``flush_interval_ns``."""
        d = self.flush_deadline()
        return d is not None and now_ns >= d

    def flush(self) -> int:
        """Append the pending events as one batch (one transaction). Returns how many.

        On a storage error the events stay pending (retried at the next flush) and the error
        is re-raised for the caller to report.
        """
        if not self._pending:
            return 0
        batch = self._pending
        self.spool.append(batch)
        done = time.monotonic_ns()
        for t_abs in self._pending_abs:
            self.delays.add(done - t_abs)
        for ev in batch:
            tag = str(ev.__struct_config__.tag)
            self.stored_by_kind[tag] = self.stored_by_kind.get(tag, 0) + 1
        n = len(batch)
        self.stored += n
        self.batches += 1
        self._pending = []
        self._pending_abs = []
        self._oldest_ns = None
        return n
