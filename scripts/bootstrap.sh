#!/usr/bin/env bash
# Install everything demotrace needs on a Debian machine with Python 3.11:
# Debian packages via apt-get (only when missing) and Python packages into ./.venv.
# Idempotent: a second run only checks.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

APT_PACKAGES=(xvfb xdotool xterm x11-utils x11-xserver-utils x11-xkb-utils openbox xauth fonts-dejavu-core python3-venv python3-tk postgresql chromium tesseract-ocr tesseract-ocr-eng xfonts-base python3-pyatspi at-spi2-core python3-gi gir1.2-gtk-3.0 dbus-daemon dbus-bin)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[bootstrap] installing Debian packages: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Pick a Python 3.11+ that has tkinter (the Tk test app needs it).
PY=""
for cand in python3.11 python3 /usr/bin/python3.11 /usr/bin/python3; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys, tkinter, venv; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    PY="$cand"; break
  fi
done
[ -n "$PY" ] || { echo "[bootstrap] error: no Python >= 3.11 with tkinter and venv found; install python3.11 python3-tk python3-venv" >&2; exit 1; }

STAMP=".venv/.demotrace-installed"
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv with $PY" >&2
  "$PY" -m venv .venv
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/bootstrap.sh -nt "$STAMP" ]; then
  echo "[bootstrap] installing Python packages into .venv" >&2
  # -qq: pip logs errors only. This machine's pip configuration lists local index folders, and
  # pip prints "WARNING: Location 'file:///…' is ignored" for every package they lack; errors
  # ("ERROR: …") are still shown and a failed install still stops the script (set -e).
  .venv/bin/python -m pip install -qq --upgrade pip >/dev/null
  .venv/bin/python -m pip install -qq -e ".[test]"
  # pyautogui (only the tests run it, to execute exported code) depends on python3-xlib, an
  # old fork that installs over python-xlib's `Xlib` package and breaks RandR. Install it and
  # its pure-Python helpers without dependencies, so python-xlib stays the one `Xlib`.
  .venv/bin/python -m pip install -qq --no-deps "pyautogui>=0.9.54" mouseinfo pygetwindow pymsgbox \
    pyscreeze pytweening pyrect pyperclip
  touch "$STAMP"
fi
if ! .venv/bin/python -c 'import Xlib, sys; sys.exit(Xlib.__version__ < (0, 33))' 2>/dev/null; then
  echo "[bootstrap] repairing python-xlib (another package replaced it)" >&2
  .venv/bin/python -m pip install -qq --force-reinstall --no-deps "python-xlib>=0.33"
fi
