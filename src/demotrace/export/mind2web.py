"""Mind2Web exporter for web episodes (steps whose targets are DOM elements).

Field list, from the osunlp/Mind2Web dataset card ("Dataset Structure / Data Fields",
https://huggingface.co/datasets/osunlp/Mind2Web, the same list in the Mind2Web repository
README)::

    {"annotation_id", "website", "domain", "subdomain", "confirmed_task", "action_reprs": [str],
     "actions": [{"action_uid", "raw_html", "cleaned_html",
                  "operation": {"op": CLICK | TYPE | SELECT, "original_op", "value"},
                  "pos_candidates": [{"tag", "is_original_target", "is_top_level_target",
                                      "backend_node_id", "attributes"}],
                  "neg_candidates": [...]}]}

``attributes`` is a JSON *string* (the card: "use json.loads to convert back to dict") holding
the element's attributes and ``bounding_box_rect`` = ``"x,y,width,height"`` (CSS pixels).
``original_op`` may also be HOVER or ENTER, both mapped to CLICK in ``op``.

How a recording maps (every loss is counted in ``summary.json``):

- ``annotation_id`` = episode id; ``confirmed_task`` = the task instruction ("" and
  ``instruction_unknown`` when segmented without a task marker); ``website`` = host of the page
  URL; ``domain`` / ``subdomain`` (Mind2Web's topic categories) are unknown: "".
- click with a DOM target → CLICK (count > 1 or a non-left button: ``click_variant_as_click``);
  ``key`` Enter with a DOM target → CLICK with ``original_op`` ENTER; type → TYPE with the
  text; select_option, and consecutive steps on the same ``<select>`` (click to open, arrow
  keys, Enter) → one SELECT whose value is the option text the browser reported after the
  change (``selected_text``, else ``value``).
- Steps without a DOM target (``no_dom_target``) and actions Mind2Web cannot express
  (scroll, drag, hotkeys, other keys, waits: ``unsupported_action``) are left out; ``done`` /
  ``fail`` terminals have no Mind2Web counterpart and are left out silently.
- ``pos_candidates`` holds the one recorded target (``is_original_target`` and
  ``is_top_level_target`` true, ``backend_node_id`` = the extension's per-page node number,
  which is also the ``backend_node_id`` attribute in ``cleaned_html``); ``neg_candidates`` is
  empty (a recording knows only the element acted on); ``bounding_box_rect`` is in CSS pixels
  of the element's frame viewport (Mind2Web's are page coordinates: equal when the page was not
  scrolled).
- ``cleaned_html`` is the extension's size-capped snapshot taken at the pointer press (before
  the action), else the latest earlier snapshot of the same page (``cleaned_html_stale``),
  else "" (``no_cleaned_html``). ``raw_html`` is never captured (privacy): "".
- A TYPE into a secret field (password, one-time code, card fields — the policy's rules) keeps
  no value: "" (``secret_value_withheld``).
- Episodes with no exportable web step are skipped (``not_web_episode``).

Output: ``OUT/mind2web.json`` (a JSON list of tasks, like Mind2Web's ``train_*.json`` files)
and ``OUT/summary.json``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from ..errors import ExportError
from .base import ExportSummary, prepare_out
from .canonical import CanonicalDataset

NAME = "mind2web"

#: Fields of a task and of an action, from the osunlp/Mind2Web dataset card.
TASK_FIELDS = ("annotation_id", "website", "domain", "subdomain", "confirmed_task", "action_reprs", "actions")
ACTION_FIELDS = ("action_uid", "raw_html", "cleaned_html", "operation", "pos_candidates", "neg_candidates")
OPERATION_FIELDS = ("op", "original_op", "value")
CANDIDATE_FIELDS = ("tag", "is_original_target", "is_top_level_target", "backend_node_id", "attributes")
OPS = ("CLICK", "TYPE", "SELECT")
ORIGINAL_OPS = ("CLICK", "TYPE", "SELECT", "HOVER", "ENTER")
#: Target attributes copied into a candidate's ``attributes`` (the rest is demotrace context).
CANDIDATE_ATTRIBUTES = ("id", "name", "type", "role", "aria-label", "data-testid", "placeholder",
                        "href", "title", "alt", "class", "value", "autocomplete")


@dataclass(frozen=True)
class Mind2WebConfig:
    """Settings: ``overwrite`` an existing output folder."""

    overwrite: bool = False


def _attrs(target: dict[str, Any] | None) -> dict[str, str]:
    if not target:
        return {}
    try:
        a = json.loads(target.get("attributes_json") or "{}")
    except ValueError:
        return {}
    return a if isinstance(a, dict) else {}


def _is_secret(target: dict[str, Any], attrs: dict[str, str]) -> bool:
    from ..privacy.policy import default_policy
    from ..privacy.secrets import element_is_secret

    el = SimpleNamespace(secret=attrs.get("secret") == "true", role=target.get("role"),
                         name=target.get("name"), attributes=attrs)
    return element_is_secret(default_policy(), el)


def _candidate(target: dict[str, Any], attrs: dict[str, str], value_ok: bool) -> dict[str, Any]:
    keep = {k: attrs[k] for k in CANDIDATE_ATTRIBUTES if k in attrs and (k != "value" or value_ok)}
    css = attrs.get("css_bounds")
    if css:
        keep["bounding_box_rect"] = css
    elif target.get("bounds"):
        x, y, w, h = target["bounds"]
        keep["bounding_box_rect"] = f"{x:g},{y:g},{w:g},{h:g}"
    if attrs.get("node_id"):
        keep["backend_node_id"] = attrs["node_id"]
    return {
        "tag": target.get("tag") or "",
        "is_original_target": True,
        "is_top_level_target": True,
        "backend_node_id": attrs.get("node_id") or "",
        "attributes": json.dumps(keep, ensure_ascii=False, sort_keys=True),
    }


def action_repr(target: dict[str, Any], op: str, value: str) -> str:
    """Mind2Web's ``action_reprs`` entry: ``"[role]  name -> OP: value"`` (``-> CLICK`` without a
    value), role falling back to the tag."""
    label = target.get("role") or target.get("tag") or "element"
    name = (target.get("name") or "").strip()
    return f"[{label}]  {name} -> {op}" + (f": {value}" if value else "")


def validate_task(task: dict[str, Any]) -> list[str]:
    """Problems of one task against the field list above (empty = valid): missing fields,
    wrong types, unknown ops, ``attributes`` that are not a JSON object string, a
    ``bounding_box_rect`` that is not four numbers, ``action_reprs`` not one per action."""
    p: list[str] = []
    for f in TASK_FIELDS:
        if f not in task:
            p.append(f"task lacks {f!r}")
    for f in ("annotation_id", "website", "domain", "subdomain", "confirmed_task"):
        if f in task and not isinstance(task[f], str):
            p.append(f"{f} must be a string")
    acts = task.get("actions") or []
    reprs = task.get("action_reprs") or []
    if len(acts) != len(reprs):
        p.append(f"{len(acts)} actions but {len(reprs)} action_reprs")
    for i, a in enumerate(acts):
        where = f"actions[{i}]"
        for f in ACTION_FIELDS:
            if f not in a:
                p.append(f"{where} lacks {f!r}")
        op = a.get("operation") or {}
        for f in OPERATION_FIELDS:
            if not isinstance(op.get(f), str):
                p.append(f"{where}.operation.{f} must be a string")
        if op.get("op") not in OPS:
            p.append(f"{where}.operation.op {op.get('op')!r} not one of {OPS}")
        if op.get("original_op") not in ORIGINAL_OPS:
            p.append(f"{where}.operation.original_op {op.get('original_op')!r} not one of {ORIGINAL_OPS}")
        for j, c in enumerate(a.get("pos_candidates") or []):
            for f in CANDIDATE_FIELDS:
                if f not in c:
                    p.append(f"{where}.pos_candidates[{j}] lacks {f!r}")
            try:
                attrs = json.loads(c.get("attributes", ""))
                assert isinstance(attrs, dict)
            except (ValueError, AssertionError):
                p.append(f"{where}.pos_candidates[{j}].attributes is not a JSON object string")
                continue
            bb = attrs.get("bounding_box_rect")
            if bb is not None:
                try:
                    assert len([float(v) for v in bb.split(",")]) == 4
                except (ValueError, AssertionError, AttributeError):
                    p.append(f"{where}.pos_candidates[{j}] bounding_box_rect {bb!r} is not x,y,width,height")
    return p


def _op_for(row: dict[str, Any]) -> tuple[str, str, str] | None:
    """(op, original_op, value) for a row, or None when Mind2Web cannot express it."""
    a = row["action"]
    t = a["type"]
    if t == "click":
        return ("CLICK", "CLICK", "")
    if t == "type":
        return ("TYPE", "TYPE", a.get("text") or "")
    if t == "select_option":
        return ("SELECT", "SELECT", a.get("text") or "")
    if t == "key" and [k.lower() for k in a.get("keys") or []] == ["enter"]:
        return ("CLICK", "ENTER", "")
    return None


def _selected(attrs: dict[str, str]) -> str | None:
    return attrs.get("selected_text") or attrs.get("value")


def export(dataset: CanonicalDataset, out: Path, config: Mind2WebConfig = Mind2WebConfig()) -> ExportSummary:
    """Write the Mind2Web export of ``dataset``'s web episodes into ``out`` (see module doc).

    Raises:
        ExportError: ``out`` is not empty (without ``overwrite``), or a task fails
            :func:`validate_task` (a bug: the message names the problems).
    """
    out = prepare_out(Path(out), config.overwrite)
    summary = ExportSummary(format=NAME, out=str(out), settings=asdict(config))
    first = True
    with open(out / "mind2web.json", "w", encoding="utf-8") as f:
        f.write("[\n")
        for info, rows in dataset.iter_episodes():
            eid = info["episode_id"]
            task = _task(info, list(rows), summary)
            if task is None:
                summary.add_lossy("not_web_episode", eid, None, "no step with a DOM target: episode skipped")
                continue
            problems = validate_task(task)
            if problems:
                raise ExportError(f"Mind2Web task {eid} is invalid: {'; '.join(problems[:5])}")
            f.write(("" if first else ",\n") + json.dumps(task, ensure_ascii=False))
            first = False
            summary.episodes += 1
            summary.records += 1
            summary.steps += len(task["actions"])
        f.write("\n]\n")
    summary.files += 1
    summary.write(out)
    return summary


def _task(info: dict[str, Any], rows: list[dict[str, Any]], summary: ExportSummary) -> dict[str, Any] | None:
    eid = info["episode_id"]
    actions: list[dict[str, Any]] = []
    reprs: list[str] = []
    website = ""
    last_snapshot: tuple[str, str] | None = None  # (url, html)
    select_open: dict[str, Any] | None = None  # the SELECT being built: {"selector", "action", "target"}
    for row in rows:
        a = row["action"]
        si = row["step_index"]
        target = row.get("target")
        attrs = _attrs(target)
        if a["type"] in ("done", "fail"):
            continue
        if not target or target.get("source") != "dom":
            summary.add_lossy("no_dom_target", eid, si, f"{a['type']} has no DOM target: left out")
            continue
        url = attrs.get("url") or ((row.get("context") or {}).get("url")) or ""
        if url and not website:
            website = urlsplit(url).hostname or ""
        snap = attrs.get("snapshot")
        if snap:
            last_snapshot = (url, snap)
        if (target.get("tag") or "").lower() == "select":
            sel = target.get("selector") or ""
            value = _selected(attrs)
            if select_open is not None and select_open["selector"] == sel:
                if value:
                    select_open["value"] = value
                continue
            _close_select(select_open, actions, reprs, eid, summary)
            select_open = {"selector": sel, "value": value}
            entry = _action(eid, si, target, attrs, ("SELECT", "SELECT", ""), snap, last_snapshot, url, summary)
            select_open["entry"] = entry
            actions.append(entry)
            reprs.append("")
            select_open["index"] = len(actions) - 1
            continue
        _close_select(select_open, actions, reprs, eid, summary)
        select_open = None
        if a["type"] == "click" and a.get("keys"):
            summary.add_lossy("modifiers_unsupported", eid, si,
                              f"{'+'.join(a['keys'])}-click has no Mind2Web operation: left out (not a plain CLICK)")
            continue
        if a["type"] == "type" and not (a.get("text") or ""):
            summary.add_lossy("empty_text_dropped", eid, si, "typing edited away to nothing: left out")
            continue
        op = _op_for(row)
        if op is None:
            summary.add_lossy("unsupported_action", eid, si, f"{a['type']} has no Mind2Web operation: left out")
            continue
        if a["type"] == "click" and ((a.get("count") or 1) > 1 or (a.get("button") or "left") != "left"):
            summary.add_lossy("click_variant_as_click", eid, si,
                              f"{a.get('button') or 'left'} click x{a.get('count') or 1} exported as CLICK")
        if op[0] == "TYPE" and _is_secret(target, attrs):
            summary.add_lossy("secret_value_withheld", eid, si, "TYPE into a secret field: value left empty")
            op = ("TYPE", "TYPE", "")
        actions.append(_action(eid, si, target, attrs, op, snap, last_snapshot, url, summary))
        reprs.append(action_repr(target, op[0], op[2]))
    _close_select(select_open, actions, reprs, eid, summary)
    if not actions:
        return None
    if info.get("instruction") is None:
        summary.add_lossy("instruction_unknown", eid, None, "episode segmented without a task marker; confirmed_task is empty")
    return {
        "annotation_id": eid,
        "website": website,
        "domain": "",
        "subdomain": "",
        "confirmed_task": info.get("instruction") or "",
        "action_reprs": reprs,
        "actions": actions,
    }


def _close_select(open_: dict[str, Any] | None, actions: list[dict[str, Any]], reprs: list[str],
                  eid: str, summary: ExportSummary) -> None:
    if open_ is None:
        return
    entry = open_["entry"]
    value = open_.get("value") or ""
    if not value:
        summary.add_lossy("select_value_unknown", eid, None, f"no option reported for {open_['selector']}: value empty")
    entry["operation"]["value"] = value
    target = entry.pop("_target")
    reprs[open_["index"]] = action_repr(target, "SELECT", value)


def _action(eid: str, si: int, target: dict[str, Any], attrs: dict[str, str], op: tuple[str, str, str],
            snap: str | None, last: tuple[str, str] | None, url: str, summary: ExportSummary) -> dict[str, Any]:
    if snap:
        html = snap
    elif last is not None and last[0] == url:
        html = last[1]
        summary.add_lossy("cleaned_html_stale", eid, si, "no snapshot at this action: the page's previous one is used")
    else:
        html = ""
        summary.add_lossy("no_cleaned_html", eid, si, "no DOM snapshot for this page: cleaned_html empty")
    entry: dict[str, Any] = {
        "action_uid": f"{eid}-{si:04d}",
        "raw_html": "",
        "cleaned_html": html,
        "operation": {"op": op[0], "original_op": op[1], "value": op[2]},
        "pos_candidates": [_candidate(target, attrs, value_ok=not _is_secret(target, attrs))],
        "neg_candidates": [],
    }
    if op[0] == "SELECT":
        entry["_target"] = target
    return entry
