"""Raw events → actions → steps → episodes (DESIGN.md section 5).

Contract used by the CLI and exporters::

    from demotrace.build import BuildSettings, episodes_from_session, reduce_events
    for episode in episodes_from_session(reader, BuildSettings()):
        ...  # demotrace.schema.Episode
    actions = reduce_events(events, BuildSettings())   # Iterator[Action], pure, streaming

Modules: :mod:`.settings` (every threshold), :mod:`.reduce` (raw events → actions),
:mod:`.keys` (W3C → pyautogui key names), :mod:`.align` (observation before each action),
:mod:`.episodes` (segmentation, terminal steps).
"""

from .align import align
from .episodes import episodes_from_events, episodes_from_session
from .reduce import ReduceStats, reduce_events
from .settings import BuildSettings

__all__ = ["BuildSettings", "ReduceStats", "align", "episodes_from_events",
           "episodes_from_session", "reduce_events"]
