"""Merging browser reports into the session stream: CSS pixels → screen pixels, browser clock →
the recorder's monotonic clock, and reports → schema v1 ``element`` / ``focus_change`` fields.

Coordinate systems (Chromium on Linux/X11):

- **CSS pixels** of a frame's viewport: what ``getBoundingClientRect()`` and
  ``MouseEvent.clientX/Y`` return (CSSOM View, https://www.w3.org/TR/cssom-view-1/ §"Extensions
  to the Element interface", §"Extensions to the MouseEvent interface").
- **Screen coordinates** (DIP): ``MouseEvent.screenX/Y``, ``window.screenX/Y``,
  ``window.outerWidth/outerHeight`` (CSSOM View §"Extensions to the Window interface"; "CSS
  pixels of the screen", i.e. unaffected by page zoom).
- Page zoom ``z`` (``chrome.tabs.getZoom``, https://developer.chrome.com/docs/extensions/reference/api/tabs#method-getZoom):
  one CSS pixel of the page is ``z`` screen units, so ``innerWidth * z`` is the viewport width in
  screen units.
- ``devicePixelRatio`` = device scale factor × zoom (HTML §"window.devicePixelRatio"; Chromium
  folds the zoom in), so the device scale factor is ``dpr / z`` and one CSS pixel is ``dpr``
  physical pixels.

Physical desktop pixels (demotrace's unit) of a CSS point ``(cx, cy)`` in a viewport whose top-left
corner is at screen position ``(ox, oy)``::

    X = ox * dsf + cx * dpr,   Y = oy * dsf + cy * dpr,   dsf = dpr / zoom

The viewport origin ``(ox, oy)`` comes from, in order of preference:

1. **Pointer calibration** — exact: ``ox = screenX − clientX · z`` from a pointer event in the
   same frame (for key events, the frame's last pointer event if the window has not moved). This
   works for iframes too (both numbers are relative to that frame).
2. **Window geometry** — an estimate: the browser chrome (tab strip, toolbar) sits above the
   viewport and borders are equal left, right and bottom: ``border = (outerWidth − innerWidth·z)/2``,
   ``ox = screenX + border``, ``oy = screenY + outerHeight − innerHeight·z − border``; plus the
   frame's offset in the top viewport for same-origin iframes. A docked DevTools pane or a
   side panel breaks the assumption; the element then carries ``mapping="window_estimate"``.

Clock: a report carries ``t_epoch_ms`` = ``performance.timeOrigin + event.timeStamp`` (High
Resolution Time, https://www.w3.org/TR/hr-time-3/: milliseconds since the Unix epoch, fractional).
:func:`epoch_ms_to_monotonic_ns` maps it onto ``CLOCK_MONOTONIC`` with the offset between the two
clocks read now, which is what the recorder's ``t_ns`` counts from. Values in the future or more
than :data:`MAX_AGE_NS` old (a wall-clock jump) are replaced by "now".
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ...errors import SchemaError

#: Oldest accepted report age (10 s); older timestamps mean the wall clock jumped.
MAX_AGE_NS = 10_000_000_000
#: Attribute values kept per element, characters (longer values are cut).
MAX_ATTR_CHARS = 500
#: Largest cleaned-DOM snapshot passed on, characters (the extension cuts at 20 000 already).
MAX_SNAPSHOT_CHARS = 20_000


@dataclass(frozen=True)
class ViewportOrigin:
    """Where a frame's viewport starts on the screen: ``x``, ``y`` in screen units (DIP);
    ``dsf`` device scale factor (physical px per DIP); ``zoom`` page zoom; ``method`` is
    ``"pointer"`` (exact) or ``"window_estimate"``."""

    x: float
    y: float
    dsf: float
    zoom: float
    method: str

    def to_screen(self, cx: float, cy: float) -> tuple[float, float]:
        """Physical desktop pixels of the CSS point ``(cx, cy)`` of this viewport."""
        return (self.x * self.dsf + cx * self.dsf * self.zoom, self.y * self.dsf + cy * self.dsf * self.zoom)


def _num(d: dict[str, Any], key: str, where: str) -> float:
    v = d.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise SchemaError(f"browser report: {where}.{key} must be a number, got {v!r}")
    return float(v)


def viewport_origin(report: dict[str, Any]) -> ViewportOrigin:
    """The viewport origin of the frame that sent ``report`` (see the module docstring).

    ``report`` needs ``view`` {screenX, screenY, outerWidth, outerHeight, innerWidth,
    innerHeight, dpr}, optional ``zoom`` (default 1), ``pointer`` {screenX, screenY, clientX,
    clientY} and ``frame_offset`` {x, y} (CSS px in the top viewport, ``None`` if unknown).

    Raises:
        SchemaError: a needed number is missing or not a number (names the field).
    """
    view = report.get("view")
    if not isinstance(view, dict):
        raise SchemaError("browser report: missing 'view' object")
    zoom = report.get("zoom") or 1.0
    if not isinstance(zoom, (int, float)) or zoom <= 0:
        raise SchemaError(f"browser report: zoom must be a positive number, got {zoom!r}")
    dpr = _num(view, "dpr", "view")
    if dpr <= 0:
        raise SchemaError(f"browser report: view.dpr must be positive, got {dpr}")
    dsf = dpr / float(zoom)
    ptr = report.get("pointer")
    if isinstance(ptr, dict):
        ox = _num(ptr, "screenX", "pointer") - _num(ptr, "clientX", "pointer") * zoom
        oy = _num(ptr, "screenY", "pointer") - _num(ptr, "clientY", "pointer") * zoom
        return ViewportOrigin(ox, oy, dsf, float(zoom), "pointer")
    sx, sy = _num(view, "screenX", "view"), _num(view, "screenY", "view")
    border = max(0.0, (_num(view, "outerWidth", "view") - _num(view, "innerWidth", "view") * zoom) / 2)
    top = _num(view, "outerHeight", "view") - _num(view, "innerHeight", "view") * zoom - border
    ox, oy = sx + border, sy + max(0.0, top)
    off = report.get("frame_offset")
    if isinstance(off, dict):
        ox += _num(off, "x", "frame_offset") * zoom
        oy += _num(off, "y", "frame_offset") * zoom
    return ViewportOrigin(ox, oy, dsf, float(zoom), "window_estimate")


def css_rect_to_screen(rect: dict[str, Any], origin: ViewportOrigin) -> tuple[float, float, float, float]:
    """Map a CSS-pixel rect ``{x, y, width, height}`` of the viewport to physical desktop
    pixels ``(x, y, width, height)``.

    Raises:
        SchemaError: a rect field is missing or not a number.
    """
    x, y = origin.to_screen(_num(rect, "x", "bounds"), _num(rect, "y", "bounds"))
    k = origin.dsf * origin.zoom
    return (x, y, _num(rect, "width", "bounds") * k, _num(rect, "height", "bounds") * k)


def epoch_ms_to_monotonic_ns(t_epoch_ms: float | None, now_mono_ns: int | None = None,
                             now_wall_ns: int | None = None) -> int:
    """Absolute ``CLOCK_MONOTONIC`` ns of a browser timestamp (ms since the Unix epoch); "now"
    when it is missing, in the future, or older than :data:`MAX_AGE_NS`."""
    mono = time.monotonic_ns() if now_mono_ns is None else now_mono_ns
    wall = time.time_ns() if now_wall_ns is None else now_wall_ns
    if not isinstance(t_epoch_ms, (int, float)) or isinstance(t_epoch_ms, bool):
        return mono
    age = wall - int(t_epoch_ms * 1_000_000)
    if age < 0 or age > MAX_AGE_NS:
        return mono
    return mono - age


def _str_dict(d: Any) -> dict[str, str]:
    if not isinstance(d, dict):
        return {}
    return {str(k): str(v)[:MAX_ATTR_CHARS] for k, v in d.items() if v is not None}


def element_fields(report: dict[str, Any], policy: Any = None) -> dict[str, Any]:
    """Schema v1 ``element`` fields (JSON-ready: bounds as ``[x, y, w, h]`` physical pixels)
    from an ``action`` report. Extra context goes into ``attributes``: ``dom_event``, ``url``,
    ``title``, ``frame_id``, ``node_id``, ``css_bounds`` ("x,y,w,h" CSS px of the frame),
    ``dpr``, ``zoom``, ``mapping`` (pointer | window_estimate), ``snapshot`` (cleaned HTML, if
    sent and not secret). A secret element never carries ``value`` / ``selected_text``.
    ``policy`` (a :class:`~demotrace.privacy.policy.Policy`) marks more fields secret by its
    rules (:func:`~demotrace.privacy.secrets.element_is_secret`), whatever the page said.

    Raises:
        SchemaError: the report lacks ``element`` or a number the mapping needs.
    """
    el = report.get("element")
    if not isinstance(el, dict):
        raise SchemaError("browser report: missing 'element' object")
    secret = bool(el.get("secret"))
    attrs = _str_dict(el.get("attributes"))
    if not secret and policy is not None:
        from types import SimpleNamespace

        from ...privacy.secrets import element_is_secret

        secret = element_is_secret(policy, SimpleNamespace(secret=False, role=None, name=el.get("name"), attributes=attrs))
    if secret:
        for k in ("value", "selected_text", "checked"):
            attrs.pop(k, None)
    bounds = None
    css = el.get("bounds")
    if isinstance(css, dict):
        origin = viewport_origin(report)
        bounds = list(css_rect_to_screen(css, origin))
        attrs["css_bounds"] = ",".join(f"{_num(css, k, 'bounds'):g}" for k in ("x", "y", "width", "height"))
        attrs["mapping"] = origin.method
        attrs["dpr"] = f"{origin.dsf * origin.zoom:g}"
        attrs["zoom"] = f"{origin.zoom:g}"
    for key in ("event", "url", "title", "frame_id", "tab_id"):
        v = report.get(key)
        if v is not None:
            attrs["dom_event" if key == "event" else key] = str(v)[:MAX_ATTR_CHARS]
    if el.get("node_id") is not None:
        attrs["node_id"] = str(el["node_id"])
    if el.get("cross_origin_frame"):
        attrs["cross_origin_frame"] = "true"
    snap = report.get("snapshot")
    if isinstance(snap, str) and snap:
        attrs["snapshot"] = snap[:MAX_SNAPSHOT_CHARS]
    tag = el.get("tag")
    return {
        "role": el.get("role") if isinstance(el.get("role"), str) else None,
        "name": el.get("name") if isinstance(el.get("name"), str) else None,
        "bounds": bounds,
        "source": "dom",
        "selector": el.get("selector") if isinstance(el.get("selector"), str) else None,
        "tag": tag if isinstance(tag, str) else None,
        "attributes": attrs,
        "secret": secret,
    }


def focus_fields(report: dict[str, Any], browser_pid: int | None = None) -> dict[str, Any]:
    """Schema v1 ``focus_change`` fields from a ``navigation`` report (tab switch, navigation
    incl. ``history.pushState``, window focus): ``url``, ``title``, ``pid`` (the browser's, if
    known) and ``bounds`` of the window (``chrome.windows`` left/top/width/height in DIP, scaled
    by the last known device scale factor ``report["dsf"]``, default 1)."""
    win = report.get("window")
    bounds = None
    if isinstance(win, dict):
        try:
            k = float(report.get("dsf") or 1.0)
            bounds = [_num(win, "left", "window") * k, _num(win, "top", "window") * k,
                      _num(win, "width", "window") * k, _num(win, "height", "window") * k]
        except SchemaError:
            bounds = None
    url, title = report.get("url"), report.get("title")
    return {"url": url if isinstance(url, str) else None, "title": title if isinstance(title, str) else None,
            "pid": browser_pid, "bounds": bounds}
