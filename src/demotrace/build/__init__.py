"""Raw events → actions → steps → episodes (DESIGN.md section 5).

Contract used by the CLI and exporters::

    from demotrace.build import BuildSettings, episodes_from_session
    for episode in episodes_from_session(reader, BuildSettings()):
        ...  # demotrace.schema.Episode

(being written: see reduce.py, align.py, episodes.py)
"""
