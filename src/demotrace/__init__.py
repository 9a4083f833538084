"""demotrace: record consenting people's computer use and turn it into agent training data.

Public entry points live in sub-packages:

- :mod:`demotrace.schema` — raw event model (schema v1), actions, steps, episodes.
- :mod:`demotrace.capture` — platform capture backends behind one interface.
- :mod:`demotrace.spool` — the encrypted, crash-safe local store of sessions.
- :mod:`demotrace.recorder` — the recording process (ring of frames, writer, control socket).
- :mod:`demotrace.build` — raw events → actions → steps → episodes.
- :mod:`demotrace.export` — canonical Parquet and the field's formats.
- :mod:`demotrace.importers` — recordings made by other tools (DuckTrack / AgentNetTool).
"""

__version__ = "0.1.0"
