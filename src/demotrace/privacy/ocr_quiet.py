"""Keep the OCR libraries' own diagnostics off the person's terminal (bug bash 4 F16).

The in-process OCR engine (:class:`~.redact_image.TesseractEngine`, tesserocr) runs two C
libraries that write to the process's stderr on their own, mixing lines such as ``Error in
boxClipToRectangle: box outside rectangle`` (Leptonica) or ``Estimating resolution as 172``
(Tesseract) into the output of ``demotrace seal``. Neither says anything the person can act on:
a real OCR failure reaches demotrace as a failed call and is counted as a dropped item (fail
closed), never through these lines. They are silenced at their source, not by redirecting the
whole process's stderr (which would hide demotrace's own messages too):

- **Leptonica** (the copy bundled in the tesserocr wheel, ``tesserocr.libs/libleptonica-*.so``)
  sends every message through ``lept_stderr``; :func:`quiet_ocr_libraries` installs a handler
  with ``leptSetStderrHandler`` that passes each message to the :mod:`logging` logger
  ``demotrace.ocr`` at DEBUG level (``demotrace`` never configures logging: they are dropped
  unless a developer turns that logger on). Its default severity threshold is ERROR (5).
- **Tesseract** prints through ``tprintf``, which writes to the file named by its global
  parameter ``debug_file`` and to stderr when that is empty; :func:`quiet_engine` sets it to
  ``/dev/null`` on each engine (tesserocr 2.13 happens to do so already; we do not rely on it).
"""

from __future__ import annotations

import atexit
import ctypes
import logging
import threading
from typing import Any

#: Logger that receives the OCR libraries' messages (DEBUG level).
LOG = logging.getLogger("demotrace.ocr")

#: Leptonica's ``L_SEVERITY_NONE`` (environ.h): no message is emitted.
_L_SEVERITY_NONE = 6

_lock = threading.Lock()
_handler: Any = None  # the ctypes callback: kept referenced for the life of the process


def _loaded_library(stem: str) -> str | None:
    """Path of the shared library whose file name starts with ``stem`` that this process has
    loaded (from ``/proc/self/maps``; Linux), or ``None``."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            for line in f:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if path.startswith("/") and path.rsplit("/", 1)[-1].startswith(stem):
                    return path
    except OSError:
        return None
    return None


def _to_log(msg: bytes | None) -> None:
    if msg:
        LOG.debug("leptonica: %s", msg.decode("utf-8", errors="replace").rstrip())


def quiet_ocr_libraries() -> bool:
    """Route Leptonica's messages to :data:`LOG` instead of stderr (module doc). Idempotent;
    call after ``import tesserocr`` (which loads the library). Returns whether the handler is
    installed (``False`` when no Leptonica is loaded or it lacks ``leptSetStderrHandler``, added
    in Leptonica 1.77; nothing is raised: this only concerns what reaches the terminal)."""
    global _handler
    with _lock:
        if _handler is not None:
            return True
        path = _loaded_library("libleptonica") or _loaded_library("liblept")
        if path is None:
            return False
        try:
            lib = ctypes.CDLL(path)  # already loaded: the same handle, no second copy
            setter = lib.leptSetStderrHandler
        except (OSError, AttributeError):
            return False
        callback = ctypes.CFUNCTYPE(None, ctypes.c_char_p)(_to_log)
        setter.argtypes = [ctypes.c_void_p]
        setter.restype = None
        setter(ctypes.cast(callback, ctypes.c_void_p))
        _handler = callback
        # at exit, before the interpreter is torn down (no Python callback may run after it),
        # Leptonica stops emitting messages at all: severity L_SEVERITY_NONE (6)
        atexit.register(lib.setMsgSeverity, _L_SEVERITY_NONE)
        return True


def quiet_engine(api: Any) -> None:
    """Silence one tesserocr ``PyTessBaseAPI``: its ``tprintf`` output goes to ``/dev/null``
    (``debug_file``), and Leptonica's messages to :data:`LOG` (:func:`quiet_ocr_libraries`)."""
    api.SetVariable("debug_file", "/dev/null")
    quiet_ocr_libraries()
