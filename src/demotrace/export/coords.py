"""Coordinate conventions used by the exporters (DESIGN.md section 6).

Canonical actions hold **absolute physical pixels of the virtual desktop** (may be negative on
multi-monitor layouts). An observation shows the desktop region ``bounds`` = ``(bx, by, bw,
bh)`` (physical pixels) as an image of ``width`` x ``height`` image pixels. A desktop point
``(x, y)`` maps to:

- ``pixels`` — image pixels of the observation: ``((x - bx) * width / bw, (y - by) * height /
  bh)``, for models shown that image (sft-chat). Not what pyautogui takes: pyautogui (the
  canonical ``pyautogui`` column, OSWorld's computer_13 whose screenshots are the screen at
  full size) uses **screen pixels** ``(x - bx, y - by)``, which differ from image pixels when
  the recorder stored a downscaled frame.
- ``norm1`` — 0–1 relative to the image: ``(x - bx) / bw``, ``(y - by) / bh``; AgentNet /
  OpenCUA write these with 4 decimals (``pyautogui.click(x=0.1632, y=0.2711)`` in the
  xlangai/AgentNet dataset card).
- ``norm1000`` — 0–1000 integers as UI-TARS 1.0 / Qwen-VL grounding use: ``round(norm1 * 1000)``
  clamped to [0, 1000]. (OpenCUA's ``qwen_vl_utils.convert_point_format`` uses ``int(v * 999)``
  for its "qwen-vl" format; we keep the 1000 scale named in DESIGN.md.)
- ``resized`` — image pixels after Qwen2.5-VL's ``smart_resize`` (see :func:`smart_resize`):
  ``norm1 * resized_width``, ``norm1 * resized_height``, rounded to integers.

Points outside the observation are not clamped except for ``norm1000`` (documented there); the
exporters report them as lossy instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ExportError

CoordSystem = Literal["pixels", "norm1", "norm1000", "resized"]
COORD_SYSTEMS: tuple[str, ...] = ("pixels", "norm1", "norm1000", "resized")

#: Qwen2.5-VL defaults, from qwen-vl-utils ``vision_process.py`` (QwenLM/Qwen2.5-VL):
#: ``IMAGE_FACTOR = 28``, ``MIN_PIXELS = 4 * 28 * 28``, ``MAX_PIXELS = 16384 * 28 * 28``,
#: ``MAX_RATIO = 200``.
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 4 * 28 * 28
QWEN_MAX_PIXELS = 16384 * 28 * 28
QWEN_MAX_RATIO = 200


def smart_resize(
    height: int,
    width: int,
    *,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """The image size Qwen2.5-VL actually sees, as ``(height, width)`` in pixels.

    Rule (qwen-vl-utils ``smart_resize``): round both sides to the nearest multiple of
    ``factor`` (at least ``factor``); if the area exceeds ``max_pixels`` scale both sides down by
    ``beta = sqrt(h * w / max_pixels)`` and floor to multiples of ``factor``; if it is below
    ``min_pixels`` scale up by ``sqrt(min_pixels / (h * w))`` and ceil. Aspect ratio is kept as
    closely as possible.

    Raises:
        ExportError: a side is not positive, or the aspect ratio exceeds 200 (the same limit).
    """
    if height <= 0 or width <= 0:
        raise ExportError(f"smart_resize: image size {width}x{height} must be positive")
    if max(height, width) / min(height, width) > QWEN_MAX_RATIO:
        raise ExportError(
            f"smart_resize: aspect ratio of {width}x{height} exceeds {QWEN_MAX_RATIO}"
        )
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class Frame:
    """The geometry of one observation.

    ``bx``, ``by``, ``bw``, ``bh``: desktop region shown, physical pixels; ``width``,
    ``height``: image size in pixels.
    """

    bx: float
    by: float
    bw: float
    bh: float
    width: int
    height: int

    @classmethod
    def from_row(cls, obs: dict[str, Any] | None) -> "Frame | None":
        """From a canonical row's ``observation`` struct (``bounds`` = [x, y, w, h]); ``None``
        if the step has no observation."""
        if obs is None:
            return None
        bx, by, bw, bh = obs["bounds"]
        return cls(float(bx), float(by), float(bw), float(bh), int(obs["width"]), int(obs["height"]))

    def contains(self, x: float, y: float) -> bool:
        """True if the desktop point lies inside the region shown."""
        return self.bx <= x < self.bx + self.bw and self.by <= y < self.by + self.bh


def to_norm1(frame: Frame, x: float, y: float) -> tuple[float, float]:
    """Desktop pixels → 0–1 relative to the observation (unrounded)."""
    if frame.bw <= 0 or frame.bh <= 0:
        raise ExportError(f"observation bounds {frame.bw}x{frame.bh} are empty")
    return (x - frame.bx) / frame.bw, (y - frame.by) / frame.bh


def to_pixels(frame: Frame, x: float, y: float) -> tuple[float, float]:
    """Desktop pixels → image pixels of the observation (unrounded floats)."""
    nx, ny = to_norm1(frame, x, y)
    return nx * frame.width, ny * frame.height


def to_norm1000(frame: Frame, x: float, y: float) -> tuple[int, int]:
    """Desktop pixels → integers on a 0–1000 scale, clamped to [0, 1000]."""
    nx, ny = to_norm1(frame, x, y)
    return min(1000, max(0, round(nx * 1000))), min(1000, max(0, round(ny * 1000)))


def to_resized(frame: Frame, x: float, y: float, *, max_pixels: int = QWEN_MAX_PIXELS,
               min_pixels: int = QWEN_MIN_PIXELS) -> tuple[int, int]:
    """Desktop pixels → integer pixels of the image after :func:`smart_resize`."""
    rh, rw = smart_resize(frame.height, frame.width, max_pixels=max_pixels, min_pixels=min_pixels)
    nx, ny = to_norm1(frame, x, y)
    return round(nx * rw), round(ny * rh)


def from_norm1(frame: Frame, nx: float, ny: float) -> tuple[float, float]:
    """0–1 relative → desktop pixels (inverse of :func:`to_norm1`)."""
    return frame.bx + nx * frame.bw, frame.by + ny * frame.bh


def convert(frame: Frame, x: float, y: float, system: str, *,
            max_pixels: int = QWEN_MAX_PIXELS) -> tuple[float, float]:
    """Convert a desktop point to ``system`` (one of :data:`COORD_SYSTEMS`).

    ``pixels`` are rounded to integers (pyautogui takes integer pixels), ``norm1`` to 4
    decimals (the AgentNet convention), ``norm1000`` and ``resized`` are integers.

    Raises:
        ExportError: unknown ``system``.
    """
    if system == "pixels":
        px, py = to_pixels(frame, x, y)
        return round(px), round(py)
    if system == "norm1":
        nx, ny = to_norm1(frame, x, y)
        return round(nx, 4), round(ny, 4)
    if system == "norm1000":
        return to_norm1000(frame, x, y)
    if system == "resized":
        return to_resized(frame, x, y, max_pixels=max_pixels)
    raise ExportError(f"unknown coordinate system {system!r}; choose one of {', '.join(COORD_SYSTEMS)}")
