"""Pieces shared by the exporters: the export summary (lossy conversions made explicit),
image re-encoding, and the coordinate frame of a step."""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ExportError
from . import coords

#: How many examples of each lossy kind the summary keeps (the count is always complete).
LOSSY_EXAMPLES = 20


@dataclass
class ExportSummary:
    """What an export wrote and what it could not express faithfully.

    ``lossy`` maps a kind (e.g. ``"non_ascii_typing"``, ``"hotkey_over_3_keys"``,
    ``"scroll_pixels_to_clicks"``, ``"no_observation"``) to ``{"count": n, "examples":
    [{"episode_id", "step_index", "detail"}, …]}`` (at most :data:`LOSSY_EXAMPLES` examples).
    Written as ``summary.json`` in the output folder and printed by the CLI.
    """

    format: str
    out: str
    settings: dict[str, Any] = field(default_factory=dict)
    episodes: int = 0
    steps: int = 0
    records: int = 0
    files: int = 0
    lossy: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add_lossy(self, kind: str, episode_id: str, step_index: int | None, detail: str) -> None:
        """Count one lossy conversion of ``kind`` at a step."""
        entry = self.lossy.setdefault(kind, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < LOSSY_EXAMPLES:
            entry["examples"].append({"episode_id": episode_id, "step_index": step_index, "detail": detail})

    def lossy_count(self, kind: str) -> int:
        """Number of lossy conversions of ``kind`` (0 if none)."""
        return int(self.lossy.get(kind, {}).get("count", 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"format": self.format, "out": self.out, "settings": self.settings,
                "episodes": self.episodes, "steps": self.steps, "records": self.records,
                "files": self.files, "lossy": dict(sorted(self.lossy.items()))}

    def write(self, out: Path) -> Path:
        """Write ``summary.json`` in ``out``; returns its path."""
        path = Path(out) / "summary.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def note_unknown_outcome(summary: ExportSummary, info: dict[str, Any], row: dict[str, Any]) -> None:
    """Report a terminal ``done`` whose episode outcome is not known (segmented without task
    markers): formats with only success / failure terminals then claim a success."""
    if row["action"]["type"] == "done" and info.get("status") not in ("success",):
        summary.add_lossy("terminal_status_unknown", info["episode_id"], row["step_index"],
                          f"episode status {info.get('status')!r} exported as a success terminal")


def step_frame(row: dict[str, Any], episode: dict[str, Any]) -> coords.Frame | None:
    """The coordinate frame of a step: its observation, else the episode's screen (bounds
    and size in physical pixels), else ``None``."""
    frame = coords.Frame.from_row(row.get("observation"))
    if frame is not None:
        return frame
    screen = episode.get("screen")
    if screen:
        x, y, w, h = screen
        return coords.Frame(float(x), float(y), float(w), float(h), int(round(w)), int(round(h)))
    return None


def to_png(data: bytes, *, size: tuple[int, int] | None = None) -> bytes:
    """See :func:`_to_png`; results for the 16 most recent inputs are cached, since recordings
    reuse frames (the recorder deduplicates identical screens; a terminal step shows the last
    frame again)."""
    return _to_png(data, size)


@functools.lru_cache(maxsize=16)
def _to_png(data: bytes, size: tuple[int, int] | None = None) -> bytes:
    """Re-encode an image (WebP, PNG, …) as PNG, optionally resized to ``size`` = (width,
    height) with Lanczos. Lossless unless resized. zlib level 1: about half the encoding time
    of Pillow's default level 6 on 1280x800 screenshots for ~8 % larger files (measured with
    bench/dataset_throughput.py frames). PNG input that needs no resize is passed through.

    Raises:
        ExportError: the bytes are not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    if size is None and data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    try:
        with Image.open(io.BytesIO(data)) as src:
            src.load()
            im: Image.Image = src
            if im.mode not in ("RGB", "RGBA", "L"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            if size is not None and im.size != size:
                im = im.resize(size, Image.Resampling.LANCZOS)
            buf = io.BytesIO()
            im.save(buf, format="PNG", optimize=False, compress_level=1)
            return buf.getvalue()
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"stored observation is not a readable image: {exc}") from exc


IMAGE_FORMATS = ("png", "source")


def image_file(row: dict[str, Any], image_format: str, stem: str,
               size: tuple[int, int] | None = None) -> tuple[str, bytes]:
    """File name and bytes of a row's observation: PNG (re-encoded, optionally resized to
    ``size``) for ``image_format="png"``, the recorded bytes unchanged (``.jpeg`` / ``.webp`` / ``.png``)
    for ``"source"`` — no decoding, about 100x faster to export, for trainers that read WebP."""
    if image_format == "source" and size is None:
        fmt = (row.get("observation") or {}).get("format") or "png"
        return f"{stem}.{fmt}", row["image"]["bytes"]
    return f"{stem}.png", to_png(row["image"]["bytes"], size=size)


def prepare_out(out: Path, overwrite: bool) -> Path:
    """Create ``out``; refuse a non-empty folder unless ``overwrite``.

    Raises:
        ExportError: ``out`` is a file (whatever ``overwrite`` says), or exists, is not empty
            and ``overwrite`` is false.
        OSError: ``out`` cannot be created (read-only, a parent is a file, …).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ExportError(f"output {out} is a file, not a folder; choose another --out (a folder)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ExportError(f"output {out} exists and is not empty; choose another --out or pass --overwrite")
    out.mkdir(parents=True, exist_ok=True)
    return out


def describe(action: dict[str, Any], target: dict[str, Any] | None = None) -> str:
    """A short natural-language description of a canonical action, for history text and
    AgentNet's ``action`` field (e.g. ``Click the "OK" button``, ``Type "hello"``)."""
    text = _describe(action, target)
    t = action["type"]
    mods = [str(k) for k in action.get("keys") or ()] if t in ("click", "drag", "scroll") else []
    if mods:
        text = f"{text} while holding {'+'.join(mods)}"
    if t in ("key", "hotkey") and (action.get("count") or 1) > 1:
        text += f" {action['count']} times"
    return text


def _describe(action: dict[str, Any], target: dict[str, Any] | None) -> str:
    t = action["type"]
    name = (target or {}).get("name") if target else None
    role = (target or {}).get("role") if target else None
    on = f' the "{name}"{" " + role if role else ""}' if name else ""
    if t == "click":
        n = action.get("count") or 1
        b = action.get("button") or "left"
        verb = {1: "Click", 2: "Double-click", 3: "Triple-click"}.get(n, f"Click {n} times")
        if b != "left":
            verb = f"{b.capitalize()}-{verb.lower()}"
        return f"{verb}{on}" if on else f"{verb} at ({action['x']:.0f}, {action['y']:.0f})"
    if t == "drag":
        return f"Drag from ({action['x']:.0f}, {action['y']:.0f}) to ({action['x2']:.0f}, {action['y2']:.0f})"
    if t == "scroll":
        dy, dx = action.get("dy") or 0, action.get("dx") or 0
        parts = []
        if dy:
            parts.append(f"{'up' if dy > 0 else 'down'} {abs(dy):g} {action.get('unit') or 'tick'}(s)")
        if dx:
            parts.append(f"{'right' if dx > 0 else 'left'} {abs(dx):g} {action.get('unit') or 'tick'}(s)")
        return "Scroll " + " and ".join(parts or ["0"]) + on
    if t == "type":
        return f"Type {json.dumps(action.get('text') or '', ensure_ascii=False)}"
    if t == "key":
        return f"Press {'+'.join(action.get('keys') or [])}"
    if t == "hotkey":
        return f"Press {'+'.join(action.get('keys') or [])}"
    if t in ("key_down", "key_up"):
        return f"{'Hold' if t == 'key_down' else 'Release'} {'+'.join(action.get('keys') or [])}"
    if t in ("mouse_down", "mouse_up"):
        return f"{'Press' if t == 'mouse_down' else 'Release'} the {action.get('button') or 'left'} button"
    if t == "move":
        return f"Move the pointer to ({action['x']:.0f}, {action['y']:.0f})"
    if t == "wait":
        return f"Wait {action.get('seconds') or 0:g} s"
    if t == "select_option":
        return f"Select {json.dumps(action.get('text') or '', ensure_ascii=False)}{on}"
    if t == "done":
        return "The task is done"
    if t == "fail":
        return "The task cannot be completed"
    return str(t)
