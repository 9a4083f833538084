"""The canonical dataset: Parquet in the Hugging Face layout (DESIGN.md section 6).

Layout of a dataset folder ``DIR``::

    DIR/README.md                              dataset card; YAML front matter declares
                                               configs and dataset_info.features
    DIR/data/train-00000-of-00002.parquet      one row per step, sharded by size
    DIR/data/train-00001-of-00002.parquet
    DIR/episodes.jsonl                         episodes index: one line per episode (not a config)

One row per trajectory step; unique, deterministic key ``(episode_id, step_index)``. Rows of
one episode are contiguous and in step order, episodes in the order the builder produced them
(sessions in the order given, episodes in time order), so exporters can stream the dataset.
Columns (see :data:`FEATURES`):

- ``episode_id`` (``<session_id>-<index>``), ``step_index``, ``session_id``,
  ``episode_index``, ``instruction`` (null = unknown), ``episode_status``
- ``image``: Hugging Face ``Image`` feature, Arrow ``struct<bytes: binary, path: string>``; the
  stored frame exactly as recorded (WebP or PNG bytes, not re-encoded); ``path`` is a relative
  name ``<episode_id>/<step_index:04d>.<format>``. Null when the step has no observation.
- ``observation``: ``format``, ``width``/``height`` (image pixels), ``bounds`` [x, y, w, h]
  (desktop region shown, physical pixels), ``captured_t_ns`` (grab finished) and ``gap_ns``
  (action start − capture, ≥ 0), all on the session's monotonic clock.
- ``action``: structured canonical action (:class:`demotrace.schema.Action` field names;
  coordinates in physical desktop pixels) plus ``x_norm``/``y_norm``/``x2_norm``/``y2_norm``
  (0–1 relative to the observation, null without one); ``action_json``: the complete action
  (pre-move trace, source event seqs, context, target) as JSON.
- ``pyautogui``: the action as pyautogui code in **screen pixels**: physical desktop pixels
  relative to the top-left corner of the observed screen (``observation.bounds``; the
  episode's screen when there is no observation), so the code runs unchanged on the recorded
  screen even when the stored frame is downscaled (to draw on the image, use ``*_norm`` ×
  image size) — see :mod:`demotrace.export.pyautogui`.
- ``target`` (role, name, bounds, source, selector, tag, attributes_json), ``context``
  (window_id, app_id, title, url, window_bounds): null when unknown.
- ``t_start_ns``, ``t_end_ns``: first / last raw event of the action (session monotonic ns).
- ``flags``: step flags then action flags (e.g. "no_observation", "auto_repeat").

Wall-clock times are deliberately absent (data minimisation, DESIGN.md section 8.11).

Both ``datasets.load_dataset("parquet", data_dir=DIR)`` and plain ``pyarrow`` read it without
custom code: the Parquet schema metadata carries the ``huggingface`` features (so ``image``
decodes to a PIL image), and the card's YAML declares the same features.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from ..errors import ConfigError, ExportError
from ..schema.actions import Action, Episode, Step
from . import coords
from .pyautogui import action_code

# --------------------------------------------------------------------------------------------
# Feature spec: one description → Arrow schema, HF features JSON, and card YAML.
# A spec is ("value", dtype) | ("image",) | ("list", spec) | ("struct", [(name, spec), ...]).

_S = ("value", "string")
_I32 = ("value", "int32")
_I64 = ("value", "int64")
_F64 = ("value", "float64")
_RECT = ("list", _F64)

FEATURES: list[tuple[str, Any]] = [
    ("episode_id", _S),
    ("step_index", _I32),
    ("session_id", _S),
    ("episode_index", _I32),
    ("instruction", _S),
    ("episode_status", _S),
    ("image", ("image",)),
    ("observation", ("struct", [
        ("format", _S), ("width", _I32), ("height", _I32), ("bounds", _RECT),
        ("captured_t_ns", _I64), ("gap_ns", _I64),
    ])),
    ("action", ("struct", [
        ("type", _S), ("x", _F64), ("y", _F64), ("x2", _F64), ("y2", _F64),
        ("x_norm", _F64), ("y_norm", _F64), ("x2_norm", _F64), ("y2_norm", _F64),
        ("button", _S), ("count", _I32), ("dx", _F64), ("dy", _F64), ("unit", _S),
        ("text", _S), ("keys", ("list", _S)), ("seconds", _F64),
        ("path", ("list", ("struct", [("x", _F64), ("y", _F64), ("t_ns", _I64)]))),
        ("source_seqs", ("list", _I64)), ("flags", ("list", _S)),
    ])),
    ("action_json", _S),
    ("pyautogui", _S),
    ("target", ("struct", [
        ("role", _S), ("name", _S), ("bounds", _RECT), ("source", _S), ("selector", _S),
        ("tag", _S), ("attributes_json", _S),
    ])),
    ("context", ("struct", [
        ("window_id", _I64), ("app_id", _S), ("title", _S), ("url", _S), ("window_bounds", _RECT),
    ])),
    ("t_start_ns", _I64),
    ("t_end_ns", _I64),
    ("flags", ("list", _S)),
]

_SHARD_RE = re.compile(r"^(?P<split>[a-z]+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet$")


def _arrow_type(spec: Any) -> Any:
    import pyarrow as pa

    kind = spec[0]
    if kind == "value":
        return {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(),
                "float64": pa.float64(), "bool": pa.bool_()}[spec[1]]
    if kind == "image":
        return pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    if kind == "list":
        return pa.list_(_arrow_type(spec[1]))
    return pa.struct([(n, _arrow_type(s)) for n, s in spec[1]])


def _hf_feature(spec: Any) -> Any:
    kind = spec[0]
    if kind == "value":
        return {"dtype": spec[1], "_type": "Value"}
    if kind == "image":
        return {"_type": "Image"}
    if kind == "list":
        return {"feature": _hf_feature(spec[1]), "_type": "List"}
    return {n: _hf_feature(s) for n, s in spec[1]}


def hf_features_dict() -> dict[str, Any]:
    """The Hugging Face ``Features.to_dict()`` form of :data:`FEATURES` (stored in the Parquet
    schema metadata under ``huggingface``)."""
    return {n: _hf_feature(s) for n, s in FEATURES}


def arrow_schema() -> Any:
    """The ``pyarrow.Schema`` of the step table, with the ``huggingface`` features metadata."""
    import pyarrow as pa

    meta = {"huggingface": json.dumps({"info": {"features": hf_features_dict()}})}
    return pa.schema([(n, _arrow_type(s)) for n, s in FEATURES], metadata=meta)


def _yaml_feature(name: str, spec: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines = [f"{pad}- name: {name}"]
    lines += _yaml_body(spec, indent + 2)
    return lines


def _yaml_body(spec: Any, indent: int) -> list[str]:
    """The keys describing ``spec`` under a ``- name:`` entry (datasets' YAML list form)."""
    pad = " " * indent
    kind = spec[0]
    if kind == "value":
        return [f"{pad}dtype: {spec[1]}"]
    if kind == "image":
        return [f"{pad}dtype: image"]
    if kind == "list":
        inner = spec[1]
        if inner[0] == "value":
            return [f"{pad}list: {inner[1]}"]
        if inner[0] == "struct":
            out = [f"{pad}list:"]
            for n, s in inner[1]:
                out += _yaml_feature(n, s, indent + 2)
            return out
        raise ExportError("nested lists of lists are not used in the canonical schema")
    out = [f"{pad}struct:"]
    for n, s in spec[1]:
        out += _yaml_feature(n, s, indent + 2)
    return out


def features_yaml(indent: int = 2) -> str:
    """``dataset_info.features`` in the YAML list form of the Hugging Face dataset card."""
    lines: list[str] = []
    for n, s in FEATURES:
        lines += _yaml_feature(n, s, indent)
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Rows


def _rect(r: Any) -> list[float] | None:
    return None if r is None else [float(r.x), float(r.y), float(r.width), float(r.height)]


def step_row(episode: Episode, step: Step, image_bytes: bytes | None) -> dict[str, Any]:
    """The canonical row of one step (see module docstring for columns).

    ``image_bytes``: the encoded observation frame, or ``None`` when the step has none.

    Raises:
        ExportError: the step has an observation but no image bytes, or its action cannot be
            written as pyautogui code.
    """
    a: Action = step.action
    obs = step.observation
    frame = None
    if obs is not None:
        if image_bytes is None:
            raise ExportError(f"{episode.episode_id} step {step.index}: observation without image bytes")
        frame = coords.Frame(obs.bounds.x, obs.bounds.y, obs.bounds.width, obs.bounds.height,
                             obs.width, obs.height)

    def norm(x: float | None, y: float | None) -> tuple[float | None, float | None]:
        if frame is None or x is None or y is None:
            return None, None
        return coords.to_norm1(frame, x, y)

    xn, yn = norm(a.x, a.y)
    x2n, y2n = norm(a.x2, a.y2)
    adict = msgspec.to_builtins(a)
    # pyautogui takes SCREEN pixels, not observation-image pixels (the recorder may store
    # downscaled frames): desktop pixels relative to the observed screen's origin, so the code
    # runs as-is on the recorded screen (without an observation: the episode's screen).
    origin = (obs.bounds.x, obs.bounds.y) if obs is not None else (
        (episode.screen.x, episode.screen.y) if episode.screen is not None else (0, 0))

    def point(x: float, y: float) -> tuple[Any, Any]:
        return round(x - origin[0]), round(y - origin[1])
    code = action_code(adict, point).code
    t = a.target
    c = a.context
    return {
        "episode_id": episode.episode_id,
        "step_index": step.index,
        "session_id": episode.session_id,
        "episode_index": episode.index,
        "instruction": episode.instruction,
        "episode_status": episode.status,
        "image": None if obs is None else {
            "bytes": image_bytes, "path": f"{episode.episode_id}/{step.index:04d}.{obs.format}"},
        "observation": None if obs is None else {
            "format": obs.format, "width": obs.width, "height": obs.height,
            "bounds": _rect(obs.bounds), "captured_t_ns": obs.captured_t_ns, "gap_ns": obs.gap_ns},
        "action": {
            "type": a.type, "x": a.x, "y": a.y, "x2": a.x2, "y2": a.y2,
            "x_norm": xn, "y_norm": yn, "x2_norm": x2n, "y2_norm": y2n,
            "button": a.button, "count": a.count, "dx": a.dx, "dy": a.dy, "unit": a.unit,
            "text": a.text, "keys": list(a.keys), "seconds": a.seconds,
            "path": [{"x": p.x, "y": p.y, "t_ns": p.t_ns} for p in a.path],
            "source_seqs": list(a.source_seqs), "flags": list(a.flags),
        },
        "action_json": msgspec.json.encode(a).decode(),
        "pyautogui": code,
        "target": None if t is None else {
            "role": t.role, "name": t.name, "bounds": _rect(t.bounds), "source": t.source,
            "selector": t.selector, "tag": t.tag,
            "attributes_json": json.dumps(t.attributes, ensure_ascii=False, sort_keys=True)},
        "context": None if c is None else {
            "window_id": c.window_id, "app_id": c.app_id, "title": c.title, "url": c.url,
            "window_bounds": _rect(c.window_bounds)},
        "t_start_ns": a.t_start_ns,
        "t_end_ns": a.t_end_ns,
        "flags": list(dict.fromkeys(list(step.flags) + list(a.flags))),
    }


def _row_bytes(row: Mapping[str, Any]) -> int:
    img = row.get("image")
    return 2048 + (len(img["bytes"]) if img else 0) + len(row.get("action_json") or "")


# --------------------------------------------------------------------------------------------
# Writer


@dataclass(frozen=True)
class CanonicalConfig:
    """Settings of the canonical Parquet writer.

    ``max_shard_bytes``: start a new shard once the current one reaches this size (default
    500 MB, the ``datasets`` default ``MAX_SHARD_SIZE`` used by ``push_to_hub``).
    ``max_row_group_bytes`` (default 100 MB, ``datasets.config.MAX_ROW_GROUP_SIZE``) and
    ``max_row_group_rows`` (default 100) bound a row group, hence the writer's memory.
    ``split``: split name in shard file names. ``overwrite``: replace an existing dataset in
    the output folder (only its README.md, episodes.jsonl and data/*.parquet are removed).
    """

    max_shard_bytes: int = 500 * 1000 * 1000
    max_row_group_bytes: int = 100 * 1000 * 1000
    max_row_group_rows: int = 100
    split: str = "train"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.max_shard_bytes <= 0 or self.max_row_group_bytes <= 0 or self.max_row_group_rows <= 0:
            raise ConfigError("canonical dataset sizes must be positive")
        if not re.fullmatch(r"[a-z]+", self.split):
            raise ConfigError(f"split name {self.split!r} must be lower-case letters")


@dataclass
class BuildSummary:
    """What a build wrote: counts and files (paths relative to the dataset folder); ``bytes``
    on disk and ``num_bytes`` uncompressed (Parquet row-group sizes, the card's split size)."""

    sessions: list[str] = field(default_factory=list)
    episodes: int = 0
    steps: int = 0
    steps_without_observation: int = 0
    shards: list[str] = field(default_factory=list)
    bytes: int = 0
    num_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"sessions": self.sessions, "episodes": self.episodes, "steps": self.steps,
                "steps_without_observation": self.steps_without_observation,
                "shards": self.shards, "bytes": self.bytes,
                "num_bytes": self.num_bytes}


class CanonicalWriter:
    """Streams episodes into a canonical dataset folder (see module docstring).

    Use ``add_episode`` for each episode, then ``close()``. Memory is bounded by one row group
    (plus the set of episode ids). Keys ``(episode_id, step_index)`` are unique because episode
    ids must be unique and steps are indexed 0..n-1; a violation raises :class:`ExportError`.

    Raises (constructor):
        ConfigError: ``out`` holds a dataset or other files and ``overwrite`` is false.
    """

    def __init__(self, out: Path, config: CanonicalConfig = CanonicalConfig()) -> None:
        self.out = Path(out)
        self.config = config
        self.data_dir = self.out / "data"
        self._prepare()
        self.summary = BuildSummary()
        self._schema = arrow_schema()
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0
        self._writer: Any = None
        self._tmp_shards: list[Path] = []
        self._episodes_file = open(self.out / ".episodes.jsonl.tmp", "w", encoding="utf-8")
        self._episode_ids: set[str] = set()
        self._closed = False

    def _prepare(self) -> None:
        ours = ["README.md", "episodes.jsonl", "data"]
        if self.out.exists():
            if not self.out.is_dir():
                raise ConfigError(f"output {self.out} exists and is not a folder")
            entries = [p.name for p in self.out.iterdir()]
            if entries:
                if not self.config.overwrite:
                    raise ConfigError(
                        f"output folder {self.out} is not empty; choose another --out or pass --overwrite")
                foreign = [e for e in entries if e not in ours and not e.startswith(".")]
                if foreign:
                    raise ConfigError(
                        f"output folder {self.out} holds files that are not a demotrace dataset "
                        f"({', '.join(sorted(foreign)[:5])}); refusing to overwrite")
                if self.data_dir.is_dir():
                    for p in self.data_dir.iterdir():
                        if not (p.suffix == ".parquet" or p.name.startswith(".")):
                            raise ConfigError(f"{p} is not a dataset shard; refusing to overwrite")
                    shutil.rmtree(self.data_dir)
                for name in ("README.md", "episodes.jsonl"):
                    (self.out / name).unlink(missing_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)

    # -- writing --

    def add_episode(self, episode: Episode, read_blob: Any) -> None:
        """Append one episode's steps. ``read_blob(blob_id) -> bytes`` returns the encoded frame
        of an observation (e.g. ``SessionReader.read_blob``).

        Raises:
            ExportError: duplicate key, or an episode whose steps are not indexed 0..n-1.
        """
        if episode.episode_id in self._episode_ids:
            raise ExportError(f"duplicate episode id {episode.episode_id}")
        self._episode_ids.add(episode.episode_id)
        first_shard = len(self._tmp_shards) - (0 if self._writer is None else 1)
        for i, step in enumerate(episode.steps):
            if step.index != i:
                raise ExportError(
                    f"{episode.episode_id}: step {i} has index {step.index} (steps must be 0..n-1)")
            img = read_blob(step.observation.blob) if step.observation is not None else None
            row = step_row(episode, step, img)
            self._buffer.append(row)
            self._buffer_bytes += _row_bytes(row)
            self.summary.steps += 1
            if step.observation is None:
                self.summary.steps_without_observation += 1
            if (len(self._buffer) >= self.config.max_row_group_rows
                    or self._buffer_bytes >= self.config.max_row_group_bytes):
                self._flush()
        self.summary.episodes += 1
        if episode.session_id not in self.summary.sessions:
            self.summary.sessions.append(episode.session_id)
        line = {
            "episode_id": episode.episode_id, "session_id": episode.session_id,
            "index": episode.index, "instruction": episode.instruction, "status": episode.status,
            "segmented_by": episode.segmented_by, "t_start_ns": episode.t_start_ns,
            "t_end_ns": episode.t_end_ns, "num_steps": len(episode.steps),
            "screen": _rect(episode.screen), "first_shard": max(first_shard, 0),
        }
        self._episodes_file.write(json.dumps(line, ensure_ascii=False) + "\n")

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self._schema)
        if self._writer is None:
            path = self.data_dir / f".shard-{len(self._tmp_shards):05d}.parquet.tmp"
            self._tmp_shards.append(path)
            self._writer = pq.ParquetWriter(path, self._schema, compression="zstd")
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self._buffer = []
        self._buffer_bytes = 0
        if self._tmp_shards[-1].stat().st_size >= self.config.max_shard_bytes:
            self._writer.close()
            self._writer = None

    def close(self) -> BuildSummary:
        """Flush, name the shards ``<split>-0000N-of-0000M.parquet``, write ``episodes.jsonl``
        and ``README.md``. Returns the :class:`BuildSummary`."""
        import pyarrow.parquet as pq

        if self._closed:
            return self.summary
        self._flush()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if not self._tmp_shards:  # an empty dataset still gets one (empty) shard
            path = self.data_dir / ".shard-00000.parquet.tmp"
            pq.write_table(arrow_schema().empty_table(), path, compression="zstd")
            self._tmp_shards.append(path)
        n = len(self._tmp_shards)
        for i, tmp in enumerate(self._tmp_shards):
            final = self.data_dir / f"{self.config.split}-{i:05d}-of-{n:05d}.parquet"
            os.replace(tmp, final)
            self.summary.shards.append(f"data/{final.name}")
            self.summary.bytes += final.stat().st_size
            meta = pq.ParquetFile(final).metadata
            self.summary.num_bytes += sum(meta.row_group(g).total_byte_size for g in range(meta.num_row_groups))
        self._episodes_file.close()
        os.replace(self.out / ".episodes.jsonl.tmp", self.out / "episodes.jsonl")
        (self.out / "README.md").write_text(dataset_card(self.summary, self.config.split), encoding="utf-8")
        self._closed = True
        return self.summary

    def abort(self) -> None:
        """Remove partial files after a failure (the output folder is left without a dataset)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._episodes_file.close()
        for p in self._tmp_shards:
            p.unlink(missing_ok=True)
        (self.out / ".episodes.jsonl.tmp").unlink(missing_ok=True)


def write_dataset(out: Path, episodes: Iterable[tuple[Episode, Any]],
                  config: CanonicalConfig = CanonicalConfig()) -> BuildSummary:
    """Write ``(episode, read_blob)`` pairs as a canonical dataset in ``out``.

    Raises:
        ConfigError: ``out`` is not usable (see :class:`CanonicalWriter`).
        ExportError: duplicate keys or an unconvertible action; partial files are removed.
    """
    writer = CanonicalWriter(out, config)
    try:
        for episode, read_blob in episodes:
            writer.add_episode(episode, read_blob)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def dataset_card(summary: BuildSummary, split: str = "train") -> str:
    """The README.md dataset card: YAML front matter (configs, dataset_info.features, splits)
    and a description of the columns."""
    yaml = "\n".join([
        "---",
        "pretty_name: demotrace computer-use trajectories",
        "task_categories:",
        "- image-text-to-text",
        "tags:",
        "- computer-use",
        "- gui-agent",
        "- trajectories",
        "configs:",
        "- config_name: default",
        "  default: true",
        "  data_files:",
        f"  - split: {split}",
        f"    path: data/{split}-*",
        "dataset_info:",
        "  config_name: default",
        "  features:",
        features_yaml(2),
        "  splits:",
        f"  - name: {split}",
        f"    num_bytes: {summary.num_bytes}",
        f"    num_examples: {summary.steps}",
        f"  download_size: {summary.bytes}",
        "---",
    ])
    body = f"""
# demotrace computer-use trajectories

Recorded with consent by demotrace and reduced to trajectories: each row is one **step** —
the screen *before* an action (`image`), the action, and its target. Episodes: {summary.episodes};
steps: {summary.steps} ({summary.steps_without_observation} without an observation).

- Key: (`episode_id`, `step_index`), unique and deterministic; rows of an episode are
  contiguous and in order.
- `image`: the recorded frame, bytes unchanged (WebP or PNG), null when no frame was captured
  before the action (flag `no_observation`).
- `observation.bounds` is the desktop region shown, `[x, y, width, height]` in physical
  pixels; `gap_ns` = action start − frame capture (never negative).
- `action`: canonical action, coordinates in physical desktop pixels; `*_norm` are 0–1
  relative to the observation; `action_json` holds the full record.
- `pyautogui`: the action as pyautogui code in screen pixels (physical desktop pixels
  relative to the observed screen's top-left corner): it runs as-is on the recorded screen,
  even when `image` is stored downscaled. To point on the image use `*_norm` × image size.
- Times are nanoseconds on the recording's monotonic clock; no wall-clock time is stored.
- `episodes.jsonl` (beside `data/`, not a loadable config): one line per episode — `episode_id`, `session_id`,
  `index`, `instruction` (null = unknown), `status`, `segmented_by`, `t_start_ns`,
  `t_end_ns`, `num_steps`, `screen`, `first_shard`.

Load: `datasets.load_dataset("parquet", data_dir="<this folder>/data")` or
`pyarrow.parquet.read_table("<this folder>/data")`.
"""
    return yaml + "\n" + body


# --------------------------------------------------------------------------------------------
# Reader


class CanonicalDataset:
    """Read access to a canonical dataset folder (used by exporters and replay).

    Raises (constructor):
        ExportError: the folder has no ``data/*.parquet`` shards or no ``episodes.jsonl``
            (the message says to run ``demotrace build``).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        data = self.root / "data"
        shards = sorted(p for p in data.glob("*.parquet") if _SHARD_RE.match(p.name)) if data.is_dir() else []
        if not shards or not (self.root / "episodes.jsonl").is_file():
            raise ExportError(
                f"no canonical dataset at {self.root} (expected data/train-*.parquet and "
                f"episodes.jsonl); create one with `demotrace build --out {self.root}`")
        self.shards = shards

    def episodes(self) -> list[dict[str, Any]]:
        """The episodes index (``episodes.jsonl``) in dataset order.

        Raises:
            ExportError: a line is not valid JSON (line number in the message).
        """
        out = []
        with open(self.root / "episodes.jsonl", encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ExportError(f"{self.root / 'episodes.jsonl'} line {n}: {exc}") from exc
        return out

    def iter_rows(self, columns: list[str] | None = None, batch_rows: int = 64) -> Iterator[dict[str, Any]]:
        """Yield rows as dicts, in dataset order, streaming ``batch_rows`` at a time."""
        import pyarrow.parquet as pq

        for shard in self.shards:
            pf = pq.ParquetFile(shard)
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                yield from batch.to_pylist()

    def iter_episodes(self) -> Iterator[tuple[dict[str, Any], Iterator[dict[str, Any]]]]:
        """Yield ``(episode_info, rows)`` per episode in dataset order, where ``rows`` is an
        iterator over the episode's rows in step order. Streaming: memory holds one batch of
        rows, whatever the episode length; consume ``rows`` before asking for the next episode
        (unconsumed rows are skipped).

        Raises:
            ExportError: rows of an episode are not contiguous, or an episode is missing from
                ``episodes.jsonl``.
        """
        index = {e["episode_id"]: e for e in self.episodes()}
        seen: set[str] = set()
        it = self.iter_rows()
        pending: list[dict[str, Any]] = []
        for row in it:
            pending = [row]
            break
        while pending:
            first = pending.pop()
            eid = first["episode_id"]
            if eid in seen:
                raise ExportError(f"rows of episode {eid} are not contiguous in {self.root}")
            seen.add(eid)

            def rows(first: dict[str, Any] = first, eid: str = eid) -> Iterator[dict[str, Any]]:
                yield first
                for row in it:
                    if row["episode_id"] != eid:
                        pending.append(row)
                        return
                    yield row

            group = rows()
            yield self._info(index, eid), group
            for _ in group:  # skip what the consumer left
                pass

    def _info(self, index: dict[str, dict[str, Any]], eid: str) -> dict[str, Any]:
        if eid not in index:
            raise ExportError(f"episode {eid} has rows but no line in {self.root / 'episodes.jsonl'}")
        return index[eid]

    def episode(self, episode_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One episode's info and rows (in step order), read with a filter on ``episode_id``.

        Raises:
            ExportError: no such episode (the message lists a few existing ids).
        """
        import pyarrow.parquet as pq

        index = {e["episode_id"]: e for e in self.episodes()}
        if episode_id not in index:
            some = ", ".join(list(index)[:5])
            raise ExportError(f"no episode {episode_id!r} in {self.root}; episodes include: {some}")
        table = pq.read_table([str(s) for s in self.shards], filters=[("episode_id", "==", episode_id)])
        rows = sorted(table.to_pylist(), key=lambda r: r["step_index"])
        return index[episode_id], rows
