"""The access log: hash chain + signed checkpoints; ``demotrace audit verify`` detects an edited,
removed, reordered or rewritten entry in the database (SQLite and PostgreSQL) and in an export."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest_pg import Stack, make_stack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import text
from typer.testing import CliRunner

from demotrace.cli import app as cli_app
from demotrace.server.audit import verify
from demotrace.server.errors import AuditVerifyError


@pytest.fixture
def logged(tmp_path: Path, db_url: str) -> Iterator[Stack]:
    """A collector whose log holds 12 entries (checkpoint every 5 → checkpoints at 5 and 10)."""
    st = make_stack(tmp_path / "srv", db_url, checkpoint_every=5)
    admin = st.token("admin")
    for _ in range(12):
        assert st.client.get("/v1/admin/health", headers=st.h(admin)).status_code == 200
    try:
        yield st
    finally:
        st.client.close()
        st.collector.close()


def verify_db(st: Stack) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, ["audit", "verify", "--data-dir", str(st.config.data_dir),
                                     "--database-url", st.config.db_url])
    return r.exit_code, r.output


def sql(st: Stack, stmt: str, **params: object) -> None:
    with st.collector.db.engine.begin() as c:
        c.execute(text(stmt), params)


def test_hash_chain_is_the_documented_formula(logged: Stack) -> None:
    with logged.collector.db.engine.connect() as c:
        rows = c.execute(text("SELECT seq, ts, actor_role, actor_id, action, subject_id, "
                              "resource, purpose, status, prev_hash, entry_hash "
                              "FROM audit_entries ORDER BY seq")).mappings().all()
    assert [r["seq"] for r in rows] == list(range(1, 13))
    prev = "0" * 64
    for r in rows:
        fields = {k: r[k] for k in ("seq", "ts", "actor_role", "actor_id", "action",
                                    "subject_id", "resource", "purpose", "status")}
        body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        assert r["prev_hash"] == prev
        assert r["entry_hash"] == hashlib.sha256(prev.encode() + b"\n" + body).hexdigest()
        prev = r["entry_hash"]
    assert rows[0]["actor_role"] == "admin" and rows[0]["resource"] == "GET /v1/admin/health"


def test_intact_log_verifies_from_db_and_from_export(logged: Stack, tmp_path: Path) -> None:
    code, out = verify_db(logged)
    assert code == 0, out
    assert "12 entries, 2 signed checkpoints" in out
    auditor = logged.token("auditor")
    doc = logged.client.get("/v1/audit/export", headers=logged.h(auditor)).json()
    key = logged.client.get("/v1/audit/public-key", headers=logged.h(auditor)).json()["public_key"]
    f = tmp_path / "export.json"
    f.write_text(json.dumps(doc))
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(f), "--public-key", key])
    assert r.exit_code == 0, r.output
    assert "12 entries" in r.output and "newest signed seq 12" in r.output
    # a third party pinning a different key rejects the export
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(f), "--public-key", other.hex()])
    assert r.exit_code == 1 and "not the trusted key" in r.output


TAMPERS = {
    "edited": ("UPDATE audit_entries SET purpose = 'agent-training' WHERE seq = 3",
               "seq 3: content does not match"),
    "removed": ("DELETE FROM audit_entries WHERE seq = 4", "seq 5 found where 4"),
    "reordered": (("UPDATE audit_entries SET seq = -6 WHERE seq = 6;"
                   "UPDATE audit_entries SET seq = 6 WHERE seq = 7;"
                   "UPDATE audit_entries SET seq = 7 WHERE seq = -6"),
                  "seq 6: prev_hash does not link"),
    "tail-truncated": ("DELETE FROM audit_entries WHERE seq >= 8",
                       "checkpoint 10: signed entry is missing"),
}


@pytest.mark.parametrize("kind", sorted(TAMPERS))
def test_tampering_with_the_table_is_detected(logged: Stack, kind: str) -> None:
    stmt, expect = TAMPERS[kind]
    for part in stmt.split(";"):  # the swap goes through a free value (primary key)
        sql(logged, part)
    code, out = verify_db(logged)
    assert code == 1
    assert "FAILED" in out and expect in " ".join(out.split()), out


def test_a_consistently_rewritten_chain_is_caught_by_signed_checkpoints(logged: Stack) -> None:
    """An attacker edits entry 2 and recomputes every later hash: the chain is self-consistent,
    but checkpoints 5 and 10 were signed over the old hashes."""
    with logged.collector.db.engine.connect() as c:
        rows = [dict(r) for r in c.execute(text(
            "SELECT * FROM audit_entries ORDER BY seq")).mappings()]
    rows[1]["actor_role"] = "auditor"
    prev = "0" * 64
    for r in rows:
        fields = {k: r[k] for k in ("seq", "ts", "actor_role", "actor_id", "action",
                                    "subject_id", "resource", "purpose", "status")}
        r["prev_hash"] = prev
        r["entry_hash"] = hashlib.sha256(
            prev.encode() + b"\n" + json.dumps(fields, sort_keys=True,
                                               separators=(",", ":")).encode()).hexdigest()
        prev = r["entry_hash"]
        sql(logged, "UPDATE audit_entries SET actor_role = :a, prev_hash = :p, entry_hash = :h "
                    "WHERE seq = :s", a=r["actor_role"], p=r["prev_hash"], h=r["entry_hash"],
            s=r["seq"])
    code, out = verify_db(logged)
    assert code == 1
    flat = " ".join(out.split())
    assert "checkpoint 5: entry hash differs" in flat and "checkpoint 10" in flat


def test_export_document_tampering(logged: Stack) -> None:
    doc = logged.collector.audit_export()
    assert verify(doc).entries == 12
    swapped = json.loads(json.dumps(doc))
    swapped["entries"][2], swapped["entries"][3] = swapped["entries"][3], swapped["entries"][2]
    with pytest.raises(AuditVerifyError, match="position 3: seq 4"):
        verify(swapped)
    forged = json.loads(json.dumps(doc))
    forged["checkpoints"][0]["signature"] = "00" * 64
    with pytest.raises(AuditVerifyError, match="checkpoint 5: signature invalid"):
        verify(forged)


# -- forgeries from the bug bash (issue 5): a rewritten, re-chained log must not verify --------

FIELDS = ("seq", "ts", "actor_role", "actor_id", "action", "subject_id", "resource", "purpose",
          "status")


def rechain(rows: list[dict]) -> list[dict]:
    """Renumber from 1 and recompute every hash with the documented formula (test-side)."""
    prev, out = "0" * 64, []
    for i, r in enumerate(rows, start=1):
        r = {**r, "seq": i, "prev_hash": prev}
        body = json.dumps({k: r[k] for k in FIELDS}, sort_keys=True,
                          separators=(",", ":")).encode()
        r["entry_hash"] = hashlib.sha256(prev.encode() + b"\n" + body).hexdigest()
        prev = r["entry_hash"]
        out.append(r)
    return out


def db_rows(st: Stack) -> list[dict]:
    with st.collector.db.engine.connect() as c:
        return [dict(r) for r in c.execute(text(
            "SELECT * FROM audit_entries ORDER BY seq")).mappings()]


def forge_without_curators(st: Stack) -> int:
    """Bug bash 1a: remove every curator entry, renumber, re-chain, point audit_head at the new
    head and delete audit_checkpoints. Returns the forged log's length."""
    rows = rechain([r for r in db_rows(st) if r["actor_role"] != "curator"])
    cols = (*FIELDS, "prev_hash", "entry_hash")
    with st.collector.db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_entries"))
        c.execute(text("DELETE FROM audit_checkpoints"))
        c.execute(text(f"INSERT INTO audit_entries ({', '.join(cols)}) VALUES "
                       f"({', '.join(':' + k for k in cols)})"), [{k: r[k] for k in cols}
                                                                  for r in rows])
        c.execute(text("UPDATE audit_head SET seq = :s, entry_hash = :h WHERE id = 1"),
                  {"s": rows[-1]["seq"], "h": rows[-1]["entry_hash"]})
    return len(rows)


@pytest.fixture
def mixed(tmp_path: Path, db_url: str) -> Iterator[Stack]:
    """12 entries, every third one a curator read (seq 1, 4, 7, 10); cadence 5 → checkpoints
    at 5 and 10."""
    st = make_stack(tmp_path / "srv", db_url, checkpoint_every=5)
    admin, curator = st.token("admin"), st.token("curator")
    for i in range(12):
        if i % 3 == 0:
            r = st.client.get("/v1/curator/bundles?purpose=agent-training",
                              headers=st.h(curator))
        else:
            r = st.client.get("/v1/admin/health", headers=st.h(admin))
        assert r.status_code == 200
    try:
        yield st
    finally:
        st.client.close()
        st.collector.close()


def verify_db_k(st: Stack, *extra: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli_app, ["audit", "verify", "--data-dir", str(st.config.data_dir),
                                     "--database-url", st.config.db_url,
                                     "--checkpoint-every", "5", *extra])
    return r.exit_code, " ".join(r.output.split())


def checkpoint_seqs(st: Stack) -> list[int]:
    with st.collector.db.engine.connect() as c:
        return list(c.execute(text("SELECT seq FROM audit_checkpoints ORDER BY seq")).scalars())


def test_forged_log_without_checkpoints_fails_and_is_never_signed(mixed: Stack,
                                                                  tmp_path: Path) -> None:
    """1a: the rewritten log (8 admin entries, no checkpoints, consistent audit_head) fails the
    database check; 1b: `audit export` then refuses to sign (CLI and API), and the cadence
    checkpoint at the next multiple of 5 is not signed either."""
    assert checkpoint_seqs(mixed) == [5, 10]
    assert forge_without_curators(mixed) == 8  # 12 entries minus the curator's 4
    code, out = verify_db_k(mixed)
    assert code == 1 and "0 signed checkpoints" not in out
    assert "the log ends 8 entries after its newest signed checkpoint (seq 0)" in out, out
    r = CliRunner().invoke(cli_app, ["audit", "export", str(tmp_path / "x.json"), "--data-dir",
                                     str(mixed.config.data_dir), "--database-url",
                                     mixed.config.db_url, "--checkpoint-every", "5"])
    assert r.exit_code == 1 and "refusing to sign" in r.output, r.output
    assert not (tmp_path / "x.json").exists()
    auditor = mixed.token("auditor")
    r = mixed.client.get("/v1/audit/export", headers=mixed.h(auditor))
    assert r.status_code == 500 and "verification failed" in r.text
    assert checkpoint_seqs(mixed) == []  # the export signed nothing
    admin = mixed.token("admin")
    for _ in range(3):  # the export request itself was entry 9; these reach seq 12 > 10
        mixed.client.get("/v1/admin/health", headers=mixed.h(admin))
    assert max(r["seq"] for r in db_rows(mixed)) == 12
    assert checkpoint_seqs(mixed) == []  # seq 10 was reached but not signed over the forgery


def test_export_with_dropped_entries_and_no_checkpoints_fails_third_party_verify(
        mixed: Stack, tmp_path: Path) -> None:
    """1c: a genuine export with the curator entries dropped, re-chained and
    ``checkpoints: []`` is refused by `audit verify FILE --public-key`."""
    auditor = mixed.token("auditor")
    doc = mixed.client.get("/v1/audit/export", headers=mixed.h(auditor)).json()
    key = mixed.client.get("/v1/audit/public-key", headers=mixed.h(auditor)).json()["public_key"]
    # minting the auditor token is not a request: the export covers the 12 entries
    assert [c["seq"] for c in doc["checkpoints"]] == [5, 10, 12]
    forged = {**doc, "entries": rechain([e for e in doc["entries"]
                                         if e["actor_role"] != "curator"]),
              "checkpoints": []}
    f = tmp_path / "forged.json"
    f.write_text(json.dumps(forged))
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(f), "--public-key", key])
    out = " ".join(r.output.split())
    assert r.exit_code == 1
    assert "the last entry (seq 8) is not covered by a signed checkpoint" in out, out
    # keeping the genuine checkpoints does not help: they sign the old hashes
    forged["checkpoints"] = doc["checkpoints"]
    f.write_text(json.dumps(forged))
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(f), "--public-key", key])
    assert r.exit_code == 1 and "checkpoint 5: entry hash differs" in " ".join(r.output.split())
    # deleting the middle checkpoint of a genuine export breaks the cadence (10 > 5)
    gap = {**doc, "checkpoints": [c for c in doc["checkpoints"] if c["seq"] != 5]}
    with pytest.raises(AuditVerifyError, match="entries 1..10: 10 entries between signed"):
        verify(gap)


def test_anchor_catches_a_rollback_to_an_earlier_signed_state(mixed: Stack,
                                                              tmp_path: Path) -> None:
    """An export cut back to checkpoint 10 (entries 11-12 and checkpoint 12 dropped) is a
    self-consistent older state; a verifier that kept checkpoint 12 (--save-anchor) refuses it,
    and accepts a later genuine export that extends it."""
    auditor = mixed.token("auditor")
    h = mixed.h(auditor)
    doc = mixed.client.get("/v1/audit/export", headers=h).json()
    key = mixed.client.get("/v1/audit/public-key", headers=h).json()["public_key"]
    first, anchor = tmp_path / "first.json", tmp_path / "anchor.json"
    first.write_text(json.dumps(doc))
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(first), "--public-key", key,
                                     "--save-anchor", str(anchor)])
    assert r.exit_code == 0, r.output
    assert json.loads(anchor.read_text())["seq"] == 12
    cut = {**doc, "entries": doc["entries"][:10],
           "checkpoints": [c for c in doc["checkpoints"] if c["seq"] <= 10]}
    f = tmp_path / "cut.json"
    f.write_text(json.dumps(cut))
    assert CliRunner().invoke(cli_app, ["audit", "verify", str(f), "--public-key",
                                        key]).exit_code == 0  # undetectable without an anchor
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(f), "--public-key", key,
                                     "--anchor", str(anchor)])
    out = " ".join(r.output.split())
    assert r.exit_code == 1 and "before the anchored checkpoint 12" in out, out
    # a rewritten entry before the anchor: re-signed checkpoints are impossible, but even the
    # chain alone no longer matches the anchor
    rewritten = {**doc, "entries": rechain([{**e, "purpose": None} if e["seq"] == 1 else e
                                            for e in doc["entries"]]), "checkpoints": []}
    with pytest.raises(AuditVerifyError, match="entry 12 differs from the anchored"):
        verify(rewritten, anchor=json.loads(anchor.read_text()), require_signed_end=False)
    later = tmp_path / "later.json"
    later.write_text(json.dumps(mixed.client.get("/v1/audit/export", headers=h).json()))
    r = CliRunner().invoke(cli_app, ["audit", "verify", str(later), "--public-key", key,
                                     "--anchor", str(first)])  # a whole export works too
    assert r.exit_code == 0 and "extends the anchor at seq 12" in " ".join(r.output.split())


def test_deleting_the_unsigned_tail_is_caught_through_audit_head(mixed: Stack) -> None:
    """1d: entries 11 and 12 come after the newest checkpoint (10); deleting them leaves a
    chain that verifies on its own, but audit_head still names seq 12."""
    assert verify_db_k(mixed)[0] == 0
    sql(mixed, "DELETE FROM audit_entries WHERE seq >= 11")
    code, out = verify_db_k(mixed)
    assert code == 1
    assert "audit_head records seq 12" in out and "the log ends at seq 10" in out, out


def test_cadence_is_enforced_from_the_database(mixed: Stack) -> None:
    """Deleting one cadence checkpoint (5) leaves 10 entries between signatures."""
    sql(mixed, "DELETE FROM audit_checkpoints WHERE seq = 5")
    code, out = verify_db_k(mixed)
    assert code == 1 and "entries 1..10: 10 entries between signed checkpoints" in out, out


def test_cadence_checkpoint_is_not_signed_over_an_edited_entry(mixed: Stack) -> None:
    """Entry 11 (after checkpoint 10) is edited; requests 13-15 reach the next multiple of 5,
    but the service refuses to sign seq 15 over the edit, and verify reports both."""
    sql(mixed, "UPDATE audit_entries SET status = 204 WHERE seq = 11")
    admin = mixed.token("admin")
    for _ in range(3):
        mixed.client.get("/v1/admin/health", headers=mixed.h(admin))
    assert max(r["seq"] for r in db_rows(mixed)) == 15
    assert checkpoint_seqs(mixed) == [5, 10]
    code, out = verify_db_k(mixed)
    assert code == 1 and "seq 11: content does not match" in out
    assert "the log ends 5 entries after its newest signed checkpoint (seq 10)" in out, out
