"""The recording process: capture backend → queue → writer thread → encrypted spool.

- :mod:`.session` — :class:`Recorder` (start / check_health / status / pause / resume /
  task markers / stop).
- :mod:`.settings` — :class:`RecorderSettings` (every threshold, with its unit and source).
- :mod:`.ring` — the in-memory ring of recent screen grabs and the observation rule.
- :mod:`.frames` — which frames to keep; the grab and encoder threads; content-hash dedup.
- :mod:`.writer` — batching into the spool (≤ 0.5 s per batch, never one transaction per event).
- :mod:`.control` — the owner-only Unix control socket and the one-recorder-per-home lock.
- :mod:`.indicator` — the always-visible "● REC" / "❚❚ PAUSED" window (own process).
"""

from __future__ import annotations

from .control import COMMANDS, ControlClient, ControlServer, RecorderLock
from .frames import ActionDetector, FramePipeline, FrameRequest
from .ring import FrameRing
from .session import Recorder, RecorderSummary, new_manifest
from .settings import RecorderSettings, parse_hotkey
from .writer import BatchWriter

__all__ = [
    "ActionDetector", "BatchWriter", "COMMANDS", "ControlClient", "ControlServer", "FramePipeline",
    "FrameRequest", "FrameRing", "Recorder", "RecorderLock", "RecorderSettings", "RecorderSummary",
    "new_manifest", "parse_hotkey",
]
