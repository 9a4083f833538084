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
    "reordered": ("UPDATE audit_entries SET seq = -6 WHERE seq = 6;"
                  "UPDATE audit_entries SET seq = 6 WHERE seq = 7;"
                  "UPDATE audit_entries SET seq = 7 WHERE seq = -6",
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
