"""Browser capture: a Chromium Manifest V3 extension (``extension/``) reports the DOM element
behind every pointer, wheel and key action, plus navigations and tab switches, to a native
messaging host (:mod:`.nativehost`) that forwards them to the running recorder as ``element``
and ``focus_change`` events. :mod:`.merge` maps CSS pixels to physical desktop pixels and the
browser clock to the recorder's; :mod:`.install` writes the host manifest and launcher.

See docs/browser.md for installing the extension and the host.
"""

from .install import EXTENSION_DIR, HOST_NAME, extension_id

__all__ = ["EXTENSION_DIR", "HOST_NAME", "extension_id"]
