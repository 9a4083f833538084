"""Episodes of an uploaded session, for the person's portal: list, replay, delete (issue 5
item 7).

A sealed-session bundle on the collector (:mod:`.wire`, layout 1) holds ``session.json`` (the
session manifest), ``events/<first_seq>.msgpack`` (schema v1 event batches) and
``frames/<blob_id>`` (the redacted frames, named by the spool blob id that ``Frame.blob`` and
``Observation.blob`` refer to). Episodes are computed from those events with the same code as
the dataset builder (:func:`demotrace.build.episodes.episodes_from_session`: task markers, idle
gaps, pauses, private gaps), so the portal shows exactly the episodes a dataset would hold;
``index`` is the episode's position in the session *as stored now*.

**Deleting an episode** removes its data from the stored bundle, for every reader (person,
curator, export): every event whose ``t_ns`` lies in the episode's span ``[t_start_ns,
t_end_ns]`` (except ``screen_config`` and the ``session_start`` / ``session_stop`` markers),
every event named by one of its actions' ``source_seqs``, every frame captured in that span and
every frame that is one of its steps' observations. Event batches that lose events are
re-encoded and stored as new blobs; blobs no bundle of the person still names are deleted from
the database and the blob store. The encrypted manifest is rewritten with the new blob list and
``meta.deleted_episodes`` (spans only); the bundle keeps its id, so uploading the original
again is answered "committed" and stores nothing. Derived datasets that used the bundle are
marked for rebuild. A :class:`~.models.DeletedEpisode` row keeps the span for the portal. The
request is logged by the route (``portal.delete_episode`` / ``person.delete_episode``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from sqlalchemy import delete, select

from ..build.episodes import episodes_from_session
from ..errors import SchemaError
from ..schema.actions import Episode
from ..schema.events import (
    Event,
    Frame,
    Marker,
    ScreenConfig,
    decode_batch,
    encode_batch,
)
from ..schema.manifest import SessionManifest
from .errors import ConflictError, NotFound
from .models import Blob, Bundle, BundleBlob, Dataset, DatasetMember, DeletedEpisode

_KEEP_MARKERS = ("session_start", "session_stop")


@dataclass
class StoredSession:
    """One committed bundle read back: ``manifest`` (wire manifest dict), ``session``
    (:class:`SessionManifest`, ``None`` for a bundle without ``session.json``), ``events``
    (every event, ``seq`` order), ``batches`` (events-blob sha256 → its events), ``frames``
    (spool blob id → sha256 of the stored frame)."""

    manifest: dict[str, Any]
    session: SessionManifest | None
    events: list[Event]
    batches: dict[str, list[Event]] = field(default_factory=dict)
    frames: dict[str, str] = field(default_factory=dict)

    @property
    def session_id(self) -> str:
        """The recording session's id (manifest, else ``"session"``)."""
        return (self.session.session_id if self.session else None) or \
            self.manifest.get("session_id") or "session"

    # the SessionSource protocol of build.episodes
    @property
    def _source(self) -> Any:
        sess = self.session or SessionManifest(
            session_id=self.session_id, started_utc="", timezone="UTC",
            platform=str(self.manifest.get("platform") or ""), backend="", recorder_version="")

        class _Src:
            manifest = sess

            def iter_events(_self) -> Iterator[Event]:
                return iter(self.events)

        return _Src()

    def episodes(self) -> list[Episode]:
        """The session's episodes (see module docstring); observations whose frame is not in
        the bundle are dropped from the step (flag ``no_observation``), never substituted."""
        out = []
        for ep in episodes_from_session(self._source):
            steps = []
            for st in ep.steps:
                if st.observation is not None and st.observation.blob not in self.frames:
                    st = msgspec.structs.replace(st, observation=None,
                                                 flags=(*st.flags, "no_observation"))
                steps.append(st)
            ep.steps = steps
            out.append(ep)
        return out

    def wall(self, t_ns: int) -> str | None:
        """ISO-8601 UTC wall time of session time ``t_ns`` (``None`` if the start is unknown)."""
        try:
            start = datetime.fromisoformat((self.session.started_utc if self.session else "")
                                           .replace("Z", "+00:00"))
        except ValueError:
            return None
        return (start + timedelta(microseconds=t_ns / 1000)).astimezone(UTC).strftime(
            "%Y-%m-%dT%H:%M:%SZ")


def load(c: Any, subject_id: str, bundle_id: str) -> StoredSession:
    """Read a committed bundle of ``subject_id`` through the collector ``c`` (decrypting).

    Raises:
        NotFound: no such committed bundle. KeyDestroyed: the person was erased.
        SchemaError: an events blob is not schema v1 (names the blob's path).
    """
    m = c.read_manifest(subject_id, bundle_id)
    session = None
    events: list[Event] = []
    batches: dict[str, list[Event]] = {}
    frames: dict[str, str] = {}
    for ref in m.get("blobs", []):
        path = ref.get("path", "")
        if path == "session.json":
            try:
                session = msgspec.json.decode(c.read_blob(subject_id, bundle_id, ref["sha256"]),
                                              type=SessionManifest)
            except msgspec.MsgspecError:
                session = None
        elif path.startswith("events/"):
            try:
                evs = decode_batch(c.read_blob(subject_id, bundle_id, ref["sha256"]))
            except SchemaError as exc:
                raise SchemaError(f"bundle {bundle_id}: {path}: {exc}") from exc
            batches[ref["sha256"]] = evs
            events += evs
        elif path.startswith("frames/"):
            frames[path[len("frames/"):]] = ref["sha256"]
    events.sort(key=lambda e: e.seq)
    return StoredSession(m, session, events, batches, frames)


def summary(ss: StoredSession, eps: list[Episode] | None = None) -> list[dict[str, Any]]:
    """One dict per episode: ``index``, ``episode_id``, ``instruction`` (``None``: unknown),
    ``status``, ``segmented_by``, ``t_start_ns`` / ``t_end_ns`` (session ns), ``start_utc`` /
    ``end_utc`` (ISO-8601 UTC or ``None``), ``n_steps`` (including the terminal step),
    ``duration_s`` (seconds)."""
    eps = ss.episodes() if eps is None else eps
    return [{"index": e.index, "episode_id": e.episode_id, "instruction": e.instruction,
             "status": e.status, "segmented_by": e.segmented_by, "t_start_ns": e.t_start_ns,
             "t_end_ns": e.t_end_ns, "start_utc": ss.wall(e.t_start_ns),
             "end_utc": ss.wall(e.t_end_ns), "n_steps": len(e.steps),
             "duration_s": round((e.t_end_ns - e.t_start_ns) / 1e9, 3)} for e in eps]


def find(ss: StoredSession, index: int) -> Episode:
    """Episode ``index`` of the session.

    Raises:
        NotFound: no such episode (the message gives the count).
    """
    eps = ss.episodes()
    if not 0 <= index < len(eps):
        raise NotFound(f"no episode {index} in this session (it has {len(eps)})")
    return eps[index]


def replay_html(ss: StoredSession, ep: Episode, image_url: Any) -> str:
    """The replay page of ``ep`` rendered by :func:`demotrace.replay.render_episode` (the same
    page ``demotrace replay`` writes); ``image_url(sha256) -> str`` gives each frame's ``src``
    (the portal serves frames from its own logged blob route, nothing is embedded)."""
    from ..export.canonical import step_row
    from ..replay import render_episode

    rows = []
    for st in ep.steps:
        rows.append(step_row(ep, st, b"" if st.observation is not None else None))
    info = {"episode_id": ep.episode_id, "session_id": ep.session_id,
            "instruction": ep.instruction, "status": ep.status,
            "segmented_by": ep.segmented_by, "t_start_ns": ep.t_start_ns, "t_end_ns": ep.t_end_ns}

    def src(row: dict[str, Any]) -> str:
        blob = ep.steps[row["step_index"]].observation.blob  # type: ignore[union-attr]
        return str(image_url(ss.frames[blob]))

    return render_episode(info, rows, image_src=src)


def _doomed(ss: StoredSession, ep: Episode) -> tuple[set[int], set[str]]:
    """Seqs of the events and spool blob ids of the frames that deleting ``ep`` removes."""
    lo, hi = ep.t_start_ns, ep.t_end_ns
    seqs: set[int] = set()
    for st in ep.steps:
        seqs.update(st.action.source_seqs)
    frames = {st.observation.blob for st in ep.steps if st.observation is not None}
    for e in ss.events:
        if isinstance(e, ScreenConfig) or (isinstance(e, Marker) and e.name in _KEEP_MARKERS):
            continue
        if isinstance(e, Frame):
            if lo <= e.captured_t_ns <= hi or lo <= e.t_ns <= hi or e.blob in frames:
                seqs.add(e.seq)
                frames.add(e.blob)
        elif lo <= e.t_ns <= hi:
            seqs.add(e.seq)
    for e in ss.events:  # a frame event named by an observation but outside the span
        if isinstance(e, Frame) and e.blob in frames:
            seqs.add(e.seq)
    return seqs, frames


def delete_episode(c: Any, subject_id: str, bundle_id: str, index: int) -> dict[str, Any]:
    """Delete episode ``index`` of a committed bundle (module docstring). Returns
    ``{"bundle_id", "index", "events_deleted", "frames_deleted", "blobs_deleted",
    "datasets_marked"}``.

    Raises:
        NotFound: no such bundle or episode. ConflictError: the bundle changed meanwhile (a
            concurrent deletion): reload and try again. KeyDestroyed: the person was erased.
    """
    from .service import _blob_aad, _manifest_aad

    ss = load(c, subject_id, bundle_id)
    ep = find(ss, index)
    seqs, frame_ids = _doomed(ss, ep)
    frame_shas = {ss.frames[b] for b in frame_ids if b in ss.frames}
    new_batches: dict[str, bytes | None] = {}
    for h, evs in ss.batches.items():
        kept = [e for e in evs if e.seq not in seqs]
        if len(kept) != len(evs):
            new_batches[h] = encode_batch(kept) if kept else None
    m = dict(ss.manifest)
    refs: list[dict[str, Any]] = []
    added: dict[str, bytes] = {}
    have = {r["sha256"] for r in m.get("blobs", [])}
    for ref in m.get("blobs", []):
        h = ref["sha256"]
        if h in frame_shas:
            continue
        if h in new_batches:
            data = new_batches[h]
            if data is None:
                continue
            nh = hashlib.sha256(data).hexdigest()
            if nh not in have and nh not in added:
                added[nh] = data
                refs.append({"sha256": nh, "size": len(data), "path": ref.get("path", "")})
            continue
        refs.append(ref)
    removed = have - {r["sha256"] for r in refs}
    meta = dict(m.get("meta") or {})
    meta["deleted_episodes"] = [*meta.get("deleted_episodes", []),
                                {"t_start_ns": ep.t_start_ns, "t_end_ns": ep.t_end_ns,
                                 "n_steps": len(ep.steps),
                                 "deleted_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}]
    m["meta"], m["blobs"] = meta, refs
    now = datetime.now(UTC)
    names_gone: list[str] = []
    with c.db.session() as s:
        b = c._bundle(s, subject_id, bundle_id)
        cipher = c._cipher(s, subject_id)
        current = json.loads(cipher.decrypt(b.manifest_ct, _manifest_aad(subject_id, bundle_id)))
        if current != ss.manifest:
            raise ConflictError(f"bundle {bundle_id} changed while deleting an episode; reload "
                                "the page and try again")
        stored = set(s.scalars(select(Blob.sha256).where(Blob.subject_id == subject_id,
                                                         Blob.sha256.in_(list(added)))))
        new_names = []
        for h, data in added.items():
            if h not in stored:
                name = cipher.object_name(h)
                c.blobs.put(name, cipher.encrypt(data, _blob_aad(subject_id, h)))
                new_names.append(name)
                s.add(Blob(subject_id=subject_id, sha256=h, size=len(data), stored_name=name,
                           created_at=now))
            s.add(BundleBlob(bundle_pk=b.pk, sha256=h, size=len(data),
                             path=next(r["path"] for r in refs if r["sha256"] == h)))
        if removed:
            s.execute(delete(BundleBlob).where(BundleBlob.bundle_pk == b.pk,
                                               BundleBlob.sha256.in_(list(removed))))
        s.flush()
        still = set(s.scalars(select(BundleBlob.sha256).join(Bundle).where(
            Bundle.subject_id == subject_id, BundleBlob.sha256.in_(list(removed)))))
        gone = s.scalars(select(Blob).where(Blob.subject_id == subject_id,
                                            Blob.sha256.in_(list(removed - still)))).all()
        names_gone = [g.stored_name for g in gone]
        for g in gone:
            s.delete(g)
        b.manifest_ct = cipher.encrypt(json.dumps(m, sort_keys=True).encode(),
                                       _manifest_aad(subject_id, bundle_id))
        b.n_blobs = len(refs)
        b.total_bytes = sum(int(r["size"]) for r in refs)
        s.add(DeletedEpisode(subject_id=subject_id, bundle_id=bundle_id,
                             t_start_ns=ep.t_start_ns, t_end_ns=ep.t_end_ns,
                             n_steps=len(ep.steps), deleted_at=now))
        ds_ids = set(s.scalars(select(DatasetMember.dataset_id).where(
            DatasetMember.subject_id == subject_id, DatasetMember.bundle_id == bundle_id)))
        for ds in s.scalars(select(Dataset).where(Dataset.id.in_(ds_ids))):
            reason = f"an episode of bundle {bundle_id[:12]} was deleted by its person"
            ds.needs_rebuild = True
            ds.rebuild_reason = (ds.rebuild_reason + "; " if ds.rebuild_reason else "") + reason
        c.blobs.sync(new_names)
    for n in names_gone:
        c.blobs.delete(n)
    return {"bundle_id": bundle_id, "index": index, "events_deleted": len(seqs),
            "frames_deleted": len(frame_shas), "blobs_deleted": len(names_gone),
            "datasets_marked": len(ds_ids)}


def deleted_spans(c: Any, subject_id: str, bundle_id: str) -> list[dict[str, Any]]:
    """Tombstones of the episodes deleted from a bundle (spans and step counts only)."""
    with c.db.session() as s:
        return [{"t_start_ns": d.t_start_ns, "t_end_ns": d.t_end_ns, "n_steps": d.n_steps,
                 "deleted_at": d.deleted_at.isoformat()}
                for d in s.scalars(select(DeletedEpisode).where(
                    DeletedEpisode.subject_id == subject_id,
                    DeletedEpisode.bundle_id == bundle_id).order_by(DeletedEpisode.pk))]
