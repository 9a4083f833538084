"""The consent record's scope digest travels in sealed bundles and the collector checks it
(issue 5 loose end 4), on SQLite and PostgreSQL.

The right digest is computed here the way the DEVICE computes it — ``load_policy`` of a
``policy.toml`` file (merged over the built-in floor), then ``Policy.scope_sha256`` — never by
the collector's own helper."""

from __future__ import annotations

import hashlib
import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from conftest_pg import Stack, sha
from PIL import Image

from demotrace.privacy.policy import load_policy
from demotrace.schema.events import Marker
from demotrace.server.wire import BlobRef, BundleManifest

DEFAULT_TOML = resources.files("demotrace.privacy").joinpath("default_policy.toml").read_text("utf-8")
SEALED = {"kind": "sealed-session", "schema_version": 1}
# the same version and notice, one more denied app: what is captured changed
NARROWER_TOML = DEFAULT_TOML + '\n[scope.deny.extra_test_category]\napps = ["synthetic-diary-app"]\n'


def device_scope(tmp_path: Path, toml_text: str) -> str:
    """The scope digest a device with this ``policy.toml`` records (its own loader)."""
    p = tmp_path / f"policy-{hashlib.sha256(toml_text.encode()).hexdigest()[:8]}.toml"
    p.write_text(toml_text, "utf-8")
    return load_policy(path=p).scope_sha256


def consent(**over: Any) -> dict[str, Any]:
    notice = tomllib.loads(DEFAULT_TOML)["notice"].strip()
    return {"policy_version": tomllib.loads(DEFAULT_TOML)["version"],
            "notice_sha256": hashlib.sha256(notice.encode()).hexdigest(),
            "accepted_utc": "2026-11-29T09:00:00Z", **over}


def test_scope_digest_is_checked_against_the_known_version(stack: Stack, tmp_path: Path) -> None:
    good = device_scope(tmp_path, DEFAULT_TOML)
    changed = device_scope(tmp_path, NARROWER_TOML)
    assert good != changed and len(good) == 64
    dev = stack.token("device", "kim@example.org")
    files = {"session.json": b"{}", "events/0.msgpack": b"\x90", "frames/a.png": b"a frame"}

    def begin(c: dict[str, Any], session_id: str) -> Any:
        m = BundleManifest(session_id=session_id, platform="linux-x11",
                           meta={**SEALED, "consent": c},
                           blobs=[BlobRef(sha256=sha(d), size=len(d), path=p)
                                  for p, d in files.items()])
        return stack.client.post("/v1/bundles", content=m.canonical(), headers=stack.h(dev))

    r = begin(consent(scope_sha256=changed), "s-changed")
    assert r.status_code == 422, r.text
    d = r.json()["detail"]
    assert "capture rules consented to" in d and "policy version 1" in d
    assert changed[:12] in d and good[:12] in d
    for bad in ("0" * 63, good.upper(), 5, "g" * 64):
        r = begin(consent(scope_sha256=bad), f"s-bad-{bad!s:.3}")
        assert r.status_code == 422 and "scope_sha256 is malformed" in r.json()["detail"], bad
    assert stack.collector.list_bundles(stack.subject("kim@example.org")) == []
    # the right digest, and a record without one (older devices), are both accepted
    r = begin(consent(scope_sha256=good), "s-good")
    assert r.status_code == 200 and r.json()["state"] == "open"
    r = begin(consent(), "s-old-device")
    assert r.status_code == 200 and r.json()["state"] == "open"


def test_sealed_bundle_carries_the_scope_and_a_changed_policy_file_is_refused(
        tmp_path: Path, stack: Stack) -> None:
    """A real device home: enroll (consent) under the built-in policy → seal → the wire
    manifest's consent carries the scope digest and is accepted; enroll under a policy.toml
    that denies one more app under the same version and notice → refused with 422."""
    from privacy_corpus import Builder

    from demotrace.paths import Paths
    from demotrace.privacy import record_consent
    from demotrace.privacy.seal import seal_session
    from demotrace.server.policies import ConsentRefused
    from demotrace.server.wire import read_local_bundle
    from demotrace.spool import DataKey, Spool

    for name, toml_text, ok in (("same", DEFAULT_TOML, True), ("narrower", NARROWER_TOML, False)):
        paths = Paths(tmp_path / name).ensure()
        (paths.home / "policy.toml").write_text(toml_text, "utf-8")
        policy = load_policy(paths)
        spool = Spool(paths.spool, DataKey.create(paths.key_file))
        b = Builder(spool.key)
        b.add(Marker, name="session_start")
        b.frame(Image.new("RGB", (64, 48), (0, 200, 0)))
        b.type_text("ok")
        b.write(spool, f"s-{name}")
        record_consent(paths, policy, now=datetime(2026, 11, 29, 8, 30, tzinfo=UTC))
        seal_session(paths, spool, f"s-{name}", policy)
        bundle = read_local_bundle(paths.home / "sealed" / f"s-{name}", paths.home)
        try:
            got = bundle.manifest.meta["consent"]
            assert got["scope_sha256"] == device_scope(tmp_path, toml_text)
            assert got["policy_version"] == 1 and got["accepted_utc"] == "2026-11-29T08:30:00Z"
            subject = stack.subject(f"{name}@example.org")
            if ok:
                assert stack.collector.begin(subject, "dev", bundle.manifest).state == "open"
            else:
                with pytest.raises(ConsentRefused, match="capture rules consented to"):
                    stack.collector.begin(subject, "dev", bundle.manifest)
        finally:
            bundle.close()
