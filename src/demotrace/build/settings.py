"""Thresholds of the builder (reduction, alignment, episodes), each a named setting.

All times are **nanoseconds** on the session's monotonic clock, all distances **physical
desktop pixels** (the unit of schema-v1 coordinates). Every default names its source: a
platform default, an anchor project (DuckTrack, AgentNetTool, OpenAdapt, screenpipe) or
DESIGN.md section 5; where none exists the value is our own choice and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

MS = 1_000_000
S = 1_000_000_000


@dataclass(frozen=True)
class BuildSettings:
    """Settings of :func:`demotrace.build.reduce_events` and
    :func:`demotrace.build.episodes_from_session`.

    Multi-click:
        ``multi_click_interval_ns`` (500 ms): the next press of the same button must come
        within this time of the previous press. Source: DESIGN.md section 5 ("platform
        double-click time, default 0.5 s"); Windows ``GetDoubleClickTime`` default 500 ms;
        DuckTrack's playback groups presses within 0.5 s.
        ``multi_click_distance_px`` (4 px): and within this distance of the first press.
        Source: DESIGN.md section 5; Windows ``SM_CXDOUBLECLK`` 4 px; DuckTrack playback 4 px.
        ``max_click_count`` (3): clicks merge up to a triple click (pyautogui ``tripleClick``);
        a fourth press starts a new click.

    Drag:
        ``drag_threshold_px`` (6 px): a press becomes a drag when the pointer gets more than
        this far (Euclidean) from the press point before the release; 1–2 px trackpad wobble
        stays a click. Source: DESIGN.md section 5 ("more than ~6 px").
        ``drag_path_max_points`` (1024): path samples kept per drag; longer paths are
        decimated evenly (first and last sample always kept), flag ``path_decimated``. Our
        choice, to keep memory per action bounded.

    Moves:
        ``pre_move_max_points`` (256): newest pointer samples kept in an action's
        ``pre_move`` (older ones dropped, flag ``pre_move_truncated``). Our choice (bounded
        memory; AgentNetTool keeps the whole trace).

    Scroll:
        ``scroll_merge_gap_ns`` (500 ms): wheel events merge into one scroll while each comes
        within this time of the previous one. Source: DESIGN.md section 5 ("~0.5 s");
        screenpipe treats 400 ms without wheel events as "scrolling stopped".
        ``scroll_merge_distance_px`` (24 px): ... and within this distance of the scroll's
        first event ("about the same place": a hand resting on a mouse drifts a few points
        while the wheel turns, as in the DuckTrack example). Our choice.

    Typing:
        ``typing_run_gap_ns`` (2 s): a pause longer than this between two keys of a typing run
        starts a new ``type`` action. Our choice: one ``type`` step per burst of typing into
        one field (AgentNetTool merges consecutive typing without a time limit).
        ``synthetic_release_gap_ns`` (10 ms): a release followed by a press of the same key
        within this time is X11 auto-repeat (synthetic release), not a new press. Source:
        X11 sends the synthetic KeyRelease and the repeated KeyPress with the same server
        time; no human releases and presses a key within 10 ms.
        ``text_input_echo_ns`` (50 ms): a ``text_input`` equal to the text the previous key
        produced within this time replaces it (the same character reported twice). Our choice.

    Event order:
        ``reorder_window_ns`` (1 s): events are sorted by ``(t_ns, seq)`` in a sliding window
        of this length (memory independent of session length); an event later than this is
        placed at the current stream time and flagged ``late_event``. Our choice (capture
        threads deliver within milliseconds).
        ``clock_jump_ns`` (5 s): an event more than this far behind the stream is a backwards
        clock jump (suspend, clock change): later events are shifted to continue after the
        stream time, flag ``clock_jump``. Our choice.

    Targets:
        ``element_max_age_ns`` (1 s): an ``element`` event can be an action's target if it
        was recorded no earlier than this before the action started (and, for pointer
        actions with element bounds, the point lies inside them). Our choice.

    Alignment:
        ``frame_lateness_ns`` (2 s): a frame record is written at most this long after its
        capture finished (``t_ns − captured_t_ns``); alignment waits this long after an action
        starts before choosing its observation. Our choice; the recorder flushes every 0.5 s.

    Episodes:
        ``idle_gap_ns`` (120 s): without task markers, a gap longer than this between two
        actions starts a new episode. Our choice (OpenAdapt / AgentNetTool segment by hand).
        ``meta_key_name`` ("win"): pyautogui name of the Meta/Super key ("command" on macOS;
        set from the session's platform by :func:`episodes_from_session`).
    """

    multi_click_interval_ns: int = 500 * MS
    multi_click_distance_px: float = 4.0
    max_click_count: int = 3
    drag_threshold_px: float = 6.0
    drag_path_max_points: int = 1024
    pre_move_max_points: int = 256
    scroll_merge_gap_ns: int = 500 * MS
    scroll_merge_distance_px: float = 24.0
    typing_run_gap_ns: int = 2 * S
    synthetic_release_gap_ns: int = 10 * MS
    text_input_echo_ns: int = 50 * MS
    reorder_window_ns: int = 1 * S
    clock_jump_ns: int = 5 * S
    element_max_age_ns: int = 1 * S
    frame_lateness_ns: int = 2 * S
    frame_history_ns: int = 60 * S
    idle_gap_ns: int = 120 * S
    meta_key_name: str = "win"

    def __post_init__(self) -> None:
        for name, value in self.__dict__.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
                raise ConfigError(f"BuildSettings.{name} must be >= 0, got {value}")
        if not 1 <= self.max_click_count <= 3:
            raise ConfigError(f"BuildSettings.max_click_count must be 1..3, got {self.max_click_count}")
        if self.drag_path_max_points < 2 or self.pre_move_max_points < 1:
            raise ConfigError("BuildSettings path / pre_move limits must be >= 2 / >= 1")
        if self.clock_jump_ns < self.reorder_window_ns:
            raise ConfigError("BuildSettings.clock_jump_ns must be >= reorder_window_ns")
