"""Capture backends, one per platform, behind :class:`~demotrace.capture._base.CaptureBackend`.

:func:`get_backend` chooses one: ``$DEMOTRACE_BACKEND`` if set, else by platform. If none loads
it raises :class:`~demotrace.errors.BackendUnavailable` listing every reason with its fix.
"""

from __future__ import annotations

import os
import sys

from ..errors import BackendUnavailable
from ._base import CaptureBackend, EventSink, RawFrame

_BACKENDS = {"x11": "demotrace.capture.x11:X11Backend"}


def _candidates() -> list[str]:
    forced = os.environ.get("DEMOTRACE_BACKEND")
    if forced:
        return [forced]
    if sys.platform.startswith("linux"):
        return ["x11"]
    return []


def get_backend(**options: object) -> CaptureBackend:
    """Instantiate the first backend that loads for this platform.

    Raises:
        BackendUnavailable: none loads; the message gives each backend's reason and fix.
    """
    import importlib

    reasons: list[str] = []
    cands = _candidates()
    if not cands:
        reasons.append(f"no capture backend for platform {sys.platform!r} yet (only Linux/X11)")
    for name in cands:
        target = _BACKENDS.get(name)
        if target is None:
            reasons.append(f"{name}: unknown backend (choose one of {', '.join(_BACKENDS)})")
            continue
        mod_name, cls_name = target.split(":")
        try:
            cls = getattr(importlib.import_module(mod_name), cls_name)
            return cls(**options)  # type: ignore[no-any-return]
        except Exception as exc:  # noqa: BLE001 - every reason is reported
            reasons.append(f"{name}: {exc}")
    hint = ""
    if "x11" in cands and not os.environ.get("DISPLAY"):
        hint = ("\nRun `demotrace record` inside your X11 desktop session (where $DISPLAY is set), "
                "or try `demotrace demo`, which starts its own virtual display.")
    raise BackendUnavailable("no capture backend could start:\n  - " + "\n  - ".join(reasons) + hint)


__all__ = ["CaptureBackend", "EventSink", "RawFrame", "get_backend"]
