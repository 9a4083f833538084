"""Static HTML replay of one episode of a canonical dataset.

``demotrace replay EPISODE_ID --dataset DIR --out replay.html`` writes one self-contained page:
the instruction and episode facts, then per step the observation (the frame captured *before*
the action) with the action drawn on it, the action as pyautogui code, its timing and the
observation gap. Drawing, in an SVG overlay whose ``viewBox`` is the image's pixel grid (so
marks stay on the right pixels at any display size):

- click: a magenta ring with a solid magenta centre dot (``MARK_COLOUR``) at the point, and a
  label with the button and count; drag: the recorded path (or a straight line) with start
  dot and arrow head; scroll: an arrow from the point in the scroll direction with the amount;
  type: a text box with the typed text; key / hotkey: a key label; done / fail: a banner;
  move / mouse down / up: a small cross; the target element's bounds as a dashed box.
- a step without observation shows a grey placeholder, never another frame.

Images are shown at the size of the desktop region they cover (a downscaled frame is scaled
back up, at most to the page width). Images are embedded as ``data:`` URIs (default), or written beside the page in
``<name>_files/`` with ``embed=False``. The template is ``replay.html`` in this package
(``string.Template``); every text is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from .errors import ExportError
from .export import coords
from .export.base import describe
from .export.canonical import CanonicalDataset

#: Colour of click markers (test pictures and typical UIs rarely contain pure magenta).
MARK_COLOUR = "#ff00ff"
PATH_COLOUR = "#00a0ff"
LABEL_COLOUR = "#111111"
_MIME = {"webp": "image/webp", "png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _label(x: float, y: float, text: str, s: float, *, fill: str = "#ffffe0", anchor: str = "start") -> str:
    fs = 14 * s
    w = max(1, len(text)) * fs * 0.62 + 10 * s
    h = fs + 10 * s
    rx = x if anchor == "start" else x - w / 2 if anchor == "middle" else x - w
    return (f'<rect x="{rx:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="{4 * s:.1f}" '
            f'fill="{fill}" fill-opacity="0.92" stroke="#333" stroke-width="{s:.1f}"/>'
            f'<text x="{rx + 5 * s:.1f}" y="{y + fs + 2 * s:.1f}" font-size="{fs:.1f}" '
            f'font-family="DejaVu Sans, sans-serif" fill="{LABEL_COLOUR}">{_esc(text)}</text>')


def overlay(row: dict[str, Any], frame: coords.Frame, step: int) -> str:
    """SVG elements (in image pixels) drawing the row's action on its observation."""
    a = row["action"]
    t = a["type"]
    s = max(1.0, frame.width / 900)
    parts: list[str] = []

    def img(x: float, y: float) -> tuple[float, float]:
        return coords.to_pixels(frame, x, y)

    target = row.get("target")
    if target and target.get("bounds"):
        bx, by, bw, bh = target["bounds"]
        x0, y0 = img(bx, by)
        x1, y1 = img(bx + bw, by + bh)
        parts.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" fill="none" '
                     f'stroke="#ff8c00" stroke-width="{2 * s:.1f}" stroke-dasharray="{6 * s:.1f} {4 * s:.1f}"/>')
    if t in ("click", "mouse_down", "mouse_up", "move", "scroll", "drag") and a.get("x") is not None:
        cx, cy = img(a["x"], a["y"])
    else:
        cx = cy = 0.0
    if t == "click":
        n = a.get("count") or 1
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{16 * s:.1f}" fill="none" stroke="{MARK_COLOUR}" '
                     f'stroke-width="{3 * s:.1f}"/>')
        parts.append(f'<circle class="click-dot" cx="{cx:.1f}" cy="{cy:.1f}" r="{6 * s:.1f}" fill="{MARK_COLOUR}"/>')
        mods = "".join(f"{k}+" for k in a.get("keys") or [])  # modifiers held (Ctrl-click)
        text = f"{mods}{a.get('button') or 'left'} click" + (f" ×{n}" if n > 1 else "")
        parts.append(_label(cx + 20 * s, cy - 30 * s, text, s))
    elif t == "drag":
        pts = [(p["x"], p["y"]) for p in a.get("path") or []] or [(a["x"], a["y"]), (a["x2"], a["y2"])]
        if pts[-1] != (a["x2"], a["y2"]):
            pts.append((a["x2"], a["y2"]))
        ip = " ".join(f"{x:.1f},{y:.1f}" for x, y in (img(*p) for p in pts))
        parts.append(f'<defs><marker id="arrow{step}" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="6" '
                     f'markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
                     f'fill="{PATH_COLOUR}"/></marker></defs>')
        parts.append(f'<polyline points="{ip}" fill="none" stroke="{PATH_COLOUR}" stroke-width="{4 * s:.1f}" '
                     f'marker-end="url(#arrow{step})"/>')
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{6 * s:.1f}" fill="{PATH_COLOUR}"/>')
        parts.append(_label(cx + 12 * s, cy + 10 * s, "drag", s))
    elif t == "scroll":
        dx, dy = float(a.get("dx") or 0), float(a.get("dy") or 0)
        vx, vy = dx, -dy  # screen y grows downwards; dy > 0 scrolls up
        norm = math.hypot(vx, vy) or 1.0
        length = 70 * s
        ex, ey = cx + vx / norm * length, cy + vy / norm * length
        parts.append(f'<defs><marker id="arrow{step}" viewBox="0 0 10 10" refX="8" refY="5" markerWidth="5" '
                     f'markerHeight="5" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{PATH_COLOUR}"/>'
                     f'</marker></defs>')
        parts.append(f'<line class="scroll-arrow" x1="{cx:.1f}" y1="{cy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" '
                     f'stroke="{PATH_COLOUR}" stroke-width="{5 * s:.1f}" marker-end="url(#arrow{step})"/>')
        parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{5 * s:.1f}" fill="{PATH_COLOUR}"/>')
        parts.append(_label(cx + 14 * s, cy + 8 * s, describe(a), s))
    elif t in ("move", "mouse_down", "mouse_up"):
        r = 10 * s
        parts.append(f'<path d="M{cx - r:.1f},{cy:.1f} H{cx + r:.1f} M{cx:.1f},{cy - r:.1f} V{cy + r:.1f}" '
                     f'stroke="{MARK_COLOUR}" stroke-width="{3 * s:.1f}"/>')
        parts.append(_label(cx + 12 * s, cy + 8 * s, t.replace("_", " "), s))
    elif t in ("type", "select_option"):
        text = a.get("text") or ""
        shown = text if len(text) <= 80 else text[:77] + "…"
        parts.append(_label(12 * s, frame.height - 44 * s, f"⌨ {shown}", s, fill="#e8f4ff"))
    elif t in ("key", "hotkey", "key_down", "key_up"):
        n = a.get("count") or 1 if t in ("key", "hotkey") else 1
        parts.append(_label(frame.width - 12 * s, 12 * s, "⌨ " + "+".join(a.get("keys") or [])
                            + (f" ×{n}" if n > 1 else ""), s,
                            fill="#e8ffe8", anchor="end"))
    elif t in ("done", "fail", "wait"):
        text = {"done": "DONE ✓", "fail": "FAIL ✗"}.get(t, describe(a))
        parts.append(_label(frame.width / 2, 12 * s, text, s * 1.4,
                            fill="#d4f7d4" if t == "done" else "#ffd6d6", anchor="middle"))
    return "".join(parts)


def _ms(ns: int | None) -> str:
    return "?" if ns is None else f"{ns / 1e6:.0f} ms"


def render_episode(info: dict[str, Any], rows: list[dict[str, Any]], *,
                   image_src: Any = None) -> str:
    """The replay page of one episode as an HTML string.

    ``image_src(row) -> str``: the ``src`` for a row's image (default: a data URI of the stored
    bytes).
    """
    def data_uri(row: dict[str, Any]) -> str:
        fmt = (row["observation"] or {}).get("format") or "png"
        return f"data:{_MIME.get(fmt, 'application/octet-stream')};base64,{base64.b64encode(row['image']['bytes']).decode()}"

    src = image_src or data_uri
    t0 = info.get("t_start_ns") or (rows[0]["t_start_ns"] if rows else 0)
    blocks = []
    for row in rows:
        i = row["step_index"]
        a = row["action"]
        obs = row["observation"]
        timing = (f"t = +{(row['t_start_ns'] - t0) / 1e9:.3f} s · duration {_ms(row['t_end_ns'] - row['t_start_ns'])}"
                  f" · observation gap {_ms(obs['gap_ns']) if obs else 'none'}")
        head = f"Step {i + 1} of {len(rows)}: {describe(a, row.get('target'))}"
        flags = f'<div class="flags">flags: {_esc(", ".join(row["flags"]))}</div>' if row.get("flags") else ""
        if row["image"] is not None and obs is not None:
            frame = coords.Frame.from_row(obs)
            assert frame is not None
            picture = (f'<div class="frame"><img id="img-{i}" alt="observation before step {i + 1}" '
                       f'src="{_esc(src(row))}" width="{round(frame.bw)}" height="{round(frame.bh)}">'
                       f'<svg viewBox="0 0 {frame.width} {frame.height}" preserveAspectRatio="none" '
                       f'xmlns="http://www.w3.org/2000/svg">{overlay(row, frame, i)}</svg></div>')
        else:
            picture = '<div class="noobs">no observation was captured before this action</div>'
        blocks.append(
            f'<section class="step" id="step-{i}" data-step="{i}" data-action="{_esc(a["type"])}">'
            f"<h2>{_esc(head)}</h2><div class=\"timing\">{_esc(timing)}</div>{flags}{picture}"
            f"<div><code>{_esc(row['pyautogui'])}</code></div></section>")
    tpl = Template(resources.files("demotrace").joinpath("replay.html").read_text(encoding="utf-8"))
    dur = (info.get("t_end_ns") or t0) - t0
    return tpl.substitute(
        episode_id=_esc(info["episode_id"]),
        session_id=_esc(info.get("session_id", "")),
        instruction=_esc(info.get("instruction") or "(instruction unknown)"),
        status=_esc(info.get("status", "unknown")),
        segmented_by=_esc(info.get("segmented_by", "")),
        num_steps=len(rows),
        duration=_esc(f"{dur / 1e9:.1f} s"),
        steps="\n".join(blocks),
    )


def write_replay(dataset_dir: Path, episode_id: str, out: Path, *, embed: bool = True,
                 overwrite: bool = True) -> Path:
    """Write the replay page of ``episode_id`` from the canonical dataset at ``dataset_dir``.

    ``embed``: images as data URIs (one self-contained file); otherwise written to
    ``<out stem>_files/step-NNNN.<format>`` beside the page. ``overwrite``: replace an existing
    ``out`` file (the CLI passes false unless ``--overwrite``). Returns ``out``.

    Raises:
        ExportError: no dataset there, or no such episode (the message lists some ids);
            ``out`` is a folder; ``out`` exists and ``overwrite`` is false.
        OSError: ``out`` cannot be written (its folder is read-only, a parent is a file, …).
    """
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"--out {out} is a directory; give a file name, e.g. {out / 'replay.html'}")
    if out.exists() and not overwrite:
        raise ExportError(f"{out} already exists; choose another --out or pass --overwrite to replace it")
    info, rows = CanonicalDataset(Path(dataset_dir)).episode(episode_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    image_src = None
    if not embed:
        assets = out.with_name(out.stem + "_files")
        assets.mkdir(exist_ok=True)

        def image_src(row: dict[str, Any]) -> str:
            name = f"step-{row['step_index']:04d}.{row['observation']['format']}"
            (assets / name).write_bytes(row["image"]["bytes"])
            return f"{assets.name}/{name}"

    out.write_text(render_episode(info, rows, image_src=image_src), encoding="utf-8")
    return out
