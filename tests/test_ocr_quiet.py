"""The OCR libraries' own stderr lines stay off the person's terminal (bug bash 4 F16;
:mod:`demotrace.privacy.ocr_quiet`).

Each check runs a fresh Python process, since the libraries write to the process's file
descriptor 2 (pytest's capture would hide it) and keep global state. The "loud" controls show
that each provocation really writes to stderr when nothing silences it, so the quiet runs'
empty stderr means something."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

from privacy_corpus import planted_session

from demotrace.paths import Paths
from demotrace.spool import DataKey, Spool

DEMOTRACE = str(Path(sys.executable).parent / "demotrace")

#: What Leptonica and Tesseract print on their own (Leptonica: "Error in <fn>: …",
#: "Warning in <fn>: …"; Tesseract: resolution warnings and estimates, "Empty page!!").
NOISE = re.compile(r"Error in \w+|Warning in \w+|Invalid resolution|Estimating resolution|Empty page|"
                   r"pixReadMem|Detected \d+ diacritics", re.IGNORECASE)


def _py(*parts: str) -> subprocess.CompletedProcess[str]:
    code = "\n".join(textwrap.dedent(p) for p in parts)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)


# a Leptonica error a caller can cause on purpose: reading a file that does not exist
_PIX_READ = """
    import ctypes
    from demotrace.privacy.ocr_quiet import _loaded_library
    lib = ctypes.CDLL(_loaded_library("libleptonica"))
    lib.pixRead.restype = ctypes.c_void_p
    assert lib.pixRead(b"/nonexistent/frame.png") is None
    print("done")
"""


def test_leptonica_messages_are_not_printed_once_an_engine_started() -> None:
    loud = _py("import tesserocr", _PIX_READ)
    assert loud.returncode == 0, loud.stderr
    assert "Error in pixRead" in loud.stderr  # the control: Leptonica prints it by default
    quiet = _py("""
        from PIL import Image
        from demotrace.privacy.redact_image import TesseractEngine
        assert TesseractEngine().words(Image.new("L", (60, 20), 255)) == []
    """, _PIX_READ)
    assert quiet.returncode == 0 and quiet.stdout == "done\n", quiet.stderr
    assert quiet.stderr == ""


def test_leptonica_messages_reach_the_debug_log() -> None:
    res = _py("""
        import logging, sys
        logging.basicConfig(level=logging.DEBUG, stream=sys.stdout, format="%(name)s %(message)s")
        import tesserocr
        from demotrace.privacy.ocr_quiet import quiet_ocr_libraries
        assert quiet_ocr_libraries() and quiet_ocr_libraries()  # idempotent
    """, _PIX_READ)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert "demotrace.ocr leptonica: Leptonica Error in pixRead: image file not found: /nonexistent/frame.png" \
        in res.stdout.splitlines()


def test_tesseract_tprintf_is_not_printed() -> None:
    # an implausible source resolution makes Tesseract warn and estimate one (tprintf), and an
    # empty debug_file sends tprintf to stderr, as in tesserocr builds that leave it unset
    code = """
        import sys
        from PIL import Image, ImageDraw
        import tesserocr
        from demotrace.privacy.redact_image import tessdata_dir
        from demotrace.privacy.ocr_quiet import quiet_engine
        api = tesserocr.PyTessBaseAPI(path=tessdata_dir(), lang="eng", psm=11)
        api.SetVariable("debug_file", "")
        if QUIET:
            quiet_engine(api)
        img = Image.new("L", (200, 40), 255)
        ImageDraw.Draw(img).text((5, 5), "hello 123", fill=0)
        api.SetImage(img)
        api.SetSourceResolution(10)
        assert api.Recognize()
        print(api.GetUTF8Text().split()[0])
    """
    loud = _py(code.replace("QUIET", "False"))
    assert loud.returncode == 0, loud.stderr
    assert "Invalid resolution 10 dpi" in loud.stderr  # the control
    quiet = _py(code.replace("QUIET", "True"))
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout == "hello\n" and quiet.stderr == ""


def test_cli_seal_of_frames_with_text_prints_no_ocr_noise(tmp_path: Path) -> None:
    """``demotrace seal`` (a subprocess: the person's view) of a session whose 4 frames show
    text at 8, 10, 12 and 16 px: stdout has the report, stderr nothing of the OCR libraries."""
    home = tmp_path / "home"
    paths = Paths(home).ensure()
    spool = Spool(paths.spool, DataKey.create(paths.key_file))
    sid = "20261130T091500Z-cccccc"
    planted_session(spool.key).write(spool, sid)
    env = dict(os.environ, DEMOTRACE_HOME=str(home), COLUMNS="300")
    res = subprocess.run([DEMOTRACE, "seal"], env=env, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"{sid}: ") and "4/4 frames kept" in res.stdout, res.stdout
    assert not [line for line in res.stderr.splitlines() if NOISE.search(line)], res.stderr
    assert res.stderr == "", res.stderr
