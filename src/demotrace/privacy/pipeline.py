"""The layered redaction pipeline that FAILS CLOSED (DESIGN.md §2.3, §8.5).

Layers, in order, for every item that leaves the device:

1. policy filters (scope, secret fields) — in :mod:`demotrace.privacy.seal`, per event;
2. accessibility masks — secret-field keystrokes dropped (:mod:`.secrets`);
3. pattern recognisers (Presidio, offline) — :class:`~.redact_text.PresidioPatternLayer`;
4. secret detectors — :class:`~.redact_text.SecretLayer`;
5. frames: OCR of changed regions + solid boxes — :class:`~.redact_image.FrameRedactor`;
6. re-scan of the result: text is analysed again (any finding → the item is dropped); frames are
   OCR'd again at another scale over the changed regions and any finding is painted too.

Every layer call runs under a time limit (``policy.redaction.layer_timeout_s`` seconds). A layer
that raises or exceeds its limit makes the pipeline **drop the item** and count it in
:attr:`RedactionCounts.dropped` under ``"<what>:<layer>:<error|timeout>"`` — the item is never
passed on unredacted. A worker stuck past its limit is abandoned (its executor replaced), so a
hung layer cannot stall sealing.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from PIL import Image

from .errors import RedactionError, RedactionTimeout
from .policy import Policy
from .redact_image import FrameRedactor
from .redact_text import PresidioPatternLayer, SecretLayer, TextLayer, apply_findings
from .secret_detect import Finding

T = TypeVar("T")


@dataclass
class RedactionCounts:
    """Counters of one sealing run: ``entities`` (entity type → findings redacted, text and
    frames), ``dropped`` (``"<item kind>:<layer>:<cause>"`` → items dropped), ``items_in`` /
    ``items_out`` (item kind → count)."""

    entities: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)
    items_in: Counter[str] = field(default_factory=Counter)
    items_out: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, dict[str, int]]:
        """Plain dict for JSON (sorted keys)."""
        return {k: dict(sorted(getattr(self, k).items())) for k in ("entities", "dropped", "items_in", "items_out")}


class _Guard:
    """Runs a callable with a time limit on a worker thread."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="redact")

    def run(self, layer: str, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            pool = self._pool
        fut = pool.submit(fn, *args)
        try:
            return fut.result(timeout=self.timeout_s)
        except cf.TimeoutError as exc:
            with self._lock:  # abandon the stuck worker; later calls get a fresh pool
                if self._pool is pool:
                    self._pool = cf.ThreadPoolExecutor(max_workers=2, thread_name_prefix="redact")
                pool.shutdown(wait=False, cancel_futures=True)
            raise RedactionTimeout(f"layer {layer} exceeded {self.timeout_s:g} s") from exc
        except RedactionError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of a layer is a redaction failure
            raise RedactionError(f"layer {layer} failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _cause(exc: BaseException) -> str:
    return "timeout" if isinstance(exc, (RedactionTimeout, TimeoutError)) else "error"


class RedactionPipeline:
    """Text and frame redaction with per-layer time limits, failing closed.

    ``text_layers``: callables ``text -> list[Finding]`` with a ``name`` attribute (default:
    Presidio patterns then secret detectors built from ``policy``) — tests inject a failing one.
    ``ocr``: set False only to build a text-only pipeline (frames are then dropped, counted as
    ``frame:ocr:disabled``).
    """

    def __init__(self, policy: Policy, *, text_layers: Sequence[TextLayer] | None = None, ocr: bool = True) -> None:
        self.policy = policy
        self.counts = RedactionCounts()
        self.text_layers: list[TextLayer] = (
            list(text_layers) if text_layers is not None else [PresidioPatternLayer(policy), SecretLayer()]
        )
        self._guard = _Guard(policy.redaction.layer_timeout_s)
        r = policy.redaction
        self.frames: FrameRedactor | None = (
            FrameRedactor(self.find_unguarded, upscale=r.ocr_upscale, rescan_upscale=r.ocr_rescan_upscale,
                          pad=r.ocr_region_pad_px, timeout_s=r.layer_timeout_s)
            if ocr else None
        )

    def close(self) -> None:
        """Release worker threads."""
        self._guard.close()

    # -- text --------------------------------------------------------------------------------
    def find_unguarded(self, text: str) -> list[Finding]:
        """Every text layer's findings, without time limits (used inside the frame layer, which
        is itself guarded)."""
        out: list[Finding] = []
        for layer in self.text_layers:
            out += layer(text)
        return out

    def find(self, text: str) -> list[Finding]:
        """Every text layer's findings, each layer under its time limit.

        Raises:
            RedactionError / RedactionTimeout: a layer failed (the caller drops the item).
        """
        out: list[Finding] = []
        for layer in self.text_layers:
            out += self._guard.run(getattr(layer, "name", type(layer).__name__), layer, text)
        return out

    def text(self, value: str | None, what: str) -> str | None:
        """Redact one text item of kind ``what`` (``"title"``, ``"url"``, ``"typed"`` …).

        Returns the redacted text, or ``None`` when the item is dropped (a layer failed, or the
        re-scan still finds something); both are counted.
        """
        if value is None or value == "":
            return value
        self.counts.items_in[what] += 1
        try:
            findings = self.find(value)
            red = apply_findings(value, findings)
            again = self.find(red)
        except RedactionError as exc:
            self.counts.dropped[f"{what}:{_layer_of(exc)}:{_cause(exc)}"] += 1
            return None
        if again:
            self.counts.dropped[f"{what}:rescan:found"] += 1
            return None
        for f in findings:
            self.counts.entities[f.entity] += 1
        self.counts.items_out[what] += 1
        return red

    # -- frames ------------------------------------------------------------------------------
    def frame(self, image: Image.Image, stream: object = 0) -> Image.Image | None:
        """Redact one frame (see :meth:`frames_batch`)."""
        return self.frames_batch([image], stream)[0]

    def frames_batch(self, images: Sequence[Image.Image], stream: object = 0, scale: float = 1.0) -> list[Image.Image | None]:
        """Redact consecutive frames of one stream (OCR of changed regions in one stacked
        tesseract run, boxes, re-scan). Returns the painted images; ``None`` for a frame that is
        dropped — when OCR is missing / failed / timed out or a text layer failed, the whole
        batch is dropped (nothing of it was redacted), each frame counted. After a drop the next
        frame of ``stream`` is OCR'd whole. ``scale``: ``Frame.scale`` of these frames (see
        :meth:`~demotrace.privacy.redact_image.FrameRedactor.redact_batch`)."""
        self.counts.items_in["frame"] += len(images)
        if self.frames is None:
            self.counts.dropped["frame:ocr:disabled"] += len(images)
            return [None] * len(images)
        try:
            results = self.frames.redact_batch(images, stream, scale)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            self.frames.forget(stream)
            self.counts.dropped[f"frame:{_layer_of(exc)}:{_cause(exc)}"] += len(images)
            return [None] * len(images)
        for res in results:
            for ent, n in res.entities.items():
                self.counts.entities[ent] += n
        self.counts.items_out["frame"] += len(results)
        return [r.image for r in results]


def _layer_of(exc: BaseException) -> str:
    msg = str(exc)
    if msg.startswith("layer "):
        return msg.split()[1]
    if "OCR" in msg:
        return "ocr"
    return type(exc).__name__
