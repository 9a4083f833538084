"""WebDataset exporter: POSIX tar shards of ``<key>.png`` + ``<key>.json`` pairs.

Key convention (webdataset ``tariterators.base_plus_ext``: everything before the first dot
of the file name is the sample key, the rest the field name): a key must not contain a dot.
Keys are ``<episode_id>_<step:04d>``; episode ids contain dashes but no dots — a dot in an
imported id is replaced with ``-`` (reported as ``key_sanitised``; the JSON keeps the real id),
and a resulting collision is an error. Files of one sample are adjacent, in step order.

``<key>.json`` holds the canonical row without the image bytes (columns as in
:mod:`demotrace.export.canonical`); ``<key>.png`` the observation re-encoded as PNG (lossless),
absent when the step has none (reported as ``no_observation``).

Shards ``OUT/demotrace-000000.tar`` … start a new file at ``max_shard_bytes`` (default 500 MB).
Tar members are written deterministically (mtime 0, uid/gid 0, mode 0644).

Output: the shards and ``OUT/summary.json``.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, ExportError
from .base import ExportSummary, prepare_out, to_png
from .canonical import CanonicalDataset

NAME = "webdataset"


@dataclass(frozen=True)
class WebDatasetConfig:
    """Settings: ``max_shard_bytes`` per tar (default 500 MB); ``overwrite`` an existing
    output folder."""

    max_shard_bytes: int = 500 * 1000 * 1000
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.max_shard_bytes <= 0:
            raise ConfigError("max_shard_bytes must be positive")


def sample_key(episode_id: str, step_index: int) -> str:
    """``<episode_id>_<step:04d>`` with dots replaced by ``-`` (webdataset keys have none)."""
    return f"{episode_id.replace('.', '-')}_{step_index:04d}"


class _Shards:
    def __init__(self, out: Path, max_bytes: int) -> None:
        self.out, self.max_bytes = out, max_bytes
        self.n = 0
        self.tar: tarfile.TarFile | None = None
        self.path: Path | None = None
        self.paths: list[Path] = []

    def add(self, name: str, data: bytes) -> None:
        if self.tar is None or (self.path is not None and self.path.stat().st_size >= self.max_bytes):
            self.close()
            self.path = self.out / f"demotrace-{self.n:06d}.tar"
            self.paths.append(self.path)
            self.n += 1
            self.tar = tarfile.open(self.path, "w", format=tarfile.USTAR_FORMAT)
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode, info.uid, info.gid = len(data), 0, 0o644, 0, 0
        info.uname = info.gname = ""
        assert self.tar is not None
        self.tar.addfile(info, io.BytesIO(data))
        self.tar.members.clear()  # type: ignore[attr-defined]  # TarFile keeps every TarInfo (unused)
        self.tar.fileobj.flush()  # type: ignore[attr-defined]

    def close(self) -> None:
        if self.tar is not None:
            self.tar.close()
            self.tar = None


def row_json(row: dict[str, Any]) -> dict[str, Any]:
    """The JSON record of a sample: the canonical row minus image bytes, plus ``image_path``."""
    rec = {k: v for k, v in row.items() if k != "image"}
    rec["image_path"] = row["image"]["path"] if row.get("image") else None
    return rec


def export(dataset: CanonicalDataset, out: Path, config: WebDatasetConfig = WebDatasetConfig()) -> ExportSummary:
    """Write WebDataset tar shards of ``dataset`` into ``out`` (see module docstring).

    Raises:
        ExportError: ``out`` is not empty (without ``overwrite``), a sanitised key collides,
            or an image is unreadable.
    """
    out = prepare_out(Path(out), config.overwrite)
    summary = ExportSummary(format=NAME, out=str(out), settings=asdict(config))
    shards = _Shards(out, config.max_shard_bytes)
    # sanitised episode id -> original: keys are unique when these are (step indexes are)
    sanitised: dict[str, str] = {}
    try:
        for info, rows in dataset.iter_episodes():
            eid = info["episode_id"]
            safe = eid.replace(".", "-")
            if sanitised.setdefault(safe, eid) != eid:
                raise ExportError(f"webdataset keys of episodes {sanitised[safe]!r} and {eid!r} collide "
                                  f"(both become {safe!r})")
            for row in rows:
                sid = row["step_index"]
                key = sample_key(eid, sid)
                if "." in eid:
                    summary.add_lossy("key_sanitised", eid, sid, f"key {key!r}: dots replaced")
                if row["image"] is not None:
                    shards.add(f"{key}.png", to_png(row["image"]["bytes"]))
                else:
                    summary.add_lossy("no_observation", eid, sid, "sample has only .json")
                shards.add(f"{key}.json", json.dumps(row_json(row), ensure_ascii=False).encode())
                summary.steps += 1
                summary.records += 1
            summary.episodes += 1
    finally:
        shards.close()
    summary.files = len(shards.paths)
    summary.settings["shards"] = [p.name for p in shards.paths]
    summary.write(out)
    return summary
