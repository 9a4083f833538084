"""Importers of foreign recordings into the spool (one module per format).

- :mod:`.ducktrack` — DuckTrack / AgentNetTool folders (events.jsonl + metadata.json, optional
  .mp4, top_window.jsonl, element.jsonl): :func:`import_ducktrack`.
"""

from .ducktrack import DuckTrackConfig, ImportResult, import_ducktrack

#: Importers by name (``demotrace import --format``).
IMPORTERS = {"ducktrack": import_ducktrack}

__all__ = ["DuckTrackConfig", "IMPORTERS", "ImportResult", "import_ducktrack"]
