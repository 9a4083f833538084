"""Collector commands: ``server``, ``admin enroll-code``, ``device enroll``, ``upload``,
``audit export`` and ``audit verify``.

Server-side commands (``server``, ``admin …``, ``audit export``, ``audit verify --data-dir``)
work on the server's data folder (``--data-dir`` or ``$DEMOTRACE_SERVER_DATA``); device-side
commands (``device enroll``, ``upload``) on the device's home (``$DEMOTRACE_HOME``).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import socket
import ssl
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from ..errors import ConfigError
from .common import console, err_console
from .recording import _finite  # nan / inf refused with the option named

admin_app = typer.Typer(help="Server-side administration (run on the collector host).",
                        no_args_is_help=True)
device_app = typer.Typer(help="This device's enrollment with a collector.", no_args_is_help=True)
audit_app = typer.Typer(help="The collector's tamper-evident access log.", no_args_is_help=True)

DATA_DIR = typer.Option(None, "--data-dir", help="Server data folder (default $DEMOTRACE_SERVER_DATA).")
DB_URL = typer.Option(None, "--database-url", help="SQLAlchemy URL (default SQLite in the data folder; $DEMOTRACE_DATABASE_URL).")
CHECKPOINT_EVERY = typer.Option(None, "--checkpoint-every", min=1, help="Required audit checkpoint cadence in entries (default 100; $DEMOTRACE_AUDIT_CHECKPOINT_EVERY); must match the server's.")


def _config(data_dir: str | None, database_url: str | None, **kw: Any) -> Any:
    from ..server.config import ServerConfig

    return ServerConfig.from_env(data_dir, database_url=database_url, **kw)


def server(
    data_dir: str = DATA_DIR,
    database_url: str = DB_URL,
    blob_url: str = typer.Option(None, "--blob-url", help="file:///PATH or s3://BUCKET/PREFIX ($DEMOTRACE_BLOB_URL)."),
    s3_endpoint_url: str = typer.Option(None, "--s3-endpoint-url", help="S3-compatible endpoint (non-AWS)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless told otherwise)."),
    port: int = typer.Option(8470, "--port", help="TCP port."),
    cert: Path = typer.Option(None, "--cert", help="TLS certificate chain (PEM)."),
    key: Path = typer.Option(None, "--key", help="TLS private key (PEM)."),
    max_body_bytes: int = typer.Option(64 * 1024 * 1024, "--max-body-bytes", help="Request body limit (bytes) → 413."),
    rate: float = typer.Option(200.0, "--rate", callback=_finite, help="Requests per second per credential → 429."),
    master_key_file: Path = typer.Option(None, "--master-key-file", help="Server master key file (32 bytes, 0600; default <data-dir>/keys/master.key; $DEMOTRACE_MASTER_KEY_FILE)."),
    checkpoint_every: int = CHECKPOINT_EVERY,
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="Worker processes, each its own collector (default 1; more only with PostgreSQL when the server process is CPU-bound and cores are idle; rate limits become per worker; docs/operations.md)."),
    debug_worker_header: bool = typer.Option(False, "--debug-worker-header", hidden=True, help="Add X-Demotrace-Worker: <pid> to every response (debugging, --workers > 1)."),
) -> None:
    """Run the collector API (FastAPI on uvicorn). The port is bound before anything is
    printed: a port in use is one error line.

    ``--workers N`` (N > 1) runs N uvicorn worker processes on the one listening socket, each
    building its own collector from the config handed over in ``$DEMOTRACE_SERVER_CONFIG``
    (:func:`demotrace.server.app.create_app_from_env`). This process first runs the database
    migrations, creates the key files, audit head and built-in policy and sweeps pending blob
    deletes — once, before any worker starts — then supervises the workers (a dead worker is
    replaced, with one line on stderr naming both pids; SIGTERM/SIGINT stops them all and waits
    for them; if this process is killed outright, every worker gets SIGTERM from the kernel)."""
    import uvicorn

    if workers > 1:
        _serve_workers(data_dir, database_url, blob_url, s3_endpoint_url, host, port, cert, key,
                       max_body_bytes, rate, master_key_file, checkpoint_every, workers,
                       debug_worker_header)
        return

    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both --cert and --key")
    sock = _bind(host, port)
    _warn_if_exposed(host, cert)
    try:
        cfg = _config(data_dir, database_url, blob_url=blob_url, s3_endpoint_url=s3_endpoint_url,
                      master_key_file=master_key_file, checkpoint_every=checkpoint_every,
                      max_body_bytes=max_body_bytes, rate_per_s=rate,
                      rate_burst=max(1, int(rate * 5)))
        from ..server.app import create_app

        app = create_app(cfg)
        server = uvicorn.Server(uvicorn.Config(
            app, ssl_certfile=str(cert) if cert else None, ssl_keyfile=str(key) if key else None,
            log_level="warning", access_log=False))
        try:
            server.config.load()  # TLS files are read here: fail before announcing
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    err_console.print(f"collector on {'https' if cert else 'http'}://{host}:{port} "
                      f"(database {cfg.db_url.split(':')[0]}, blobs {cfg.blobs_url.split(':')[0]})")
    server.run(sockets=[sock])


def _serve_workers(data_dir: str | None, database_url: str | None, blob_url: str | None,
                   s3_endpoint_url: str | None, host: str, port: int, cert: Path | None,
                   key: Path | None, max_body_bytes: int, rate: float,
                   master_key_file: Path | None, checkpoint_every: int | None, workers: int,
                   debug_worker_header: bool) -> None:
    """``demotrace server --workers N`` (N > 1): prepare once here, then run uvicorn's
    process supervisor over N workers sharing one bound socket.

    Raises:
        ConfigError: TLS half-given or unreadable, address unusable, bad settings, database
            unreachable — all before any worker starts.
    """
    import os

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from ..server.app import SUPERVISOR_PID_ENV, WORKER_HEADER_ENV
    from ..server.config import CONFIG_ENV
    from ..server.service import Collector

    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both --cert and --key")
    sock = _bind(host, port)
    try:
        _warn_if_exposed(host, cert)
        cfg = _config(data_dir, database_url, blob_url=blob_url, s3_endpoint_url=s3_endpoint_url,
                      master_key_file=master_key_file, checkpoint_every=checkpoint_every,
                      max_body_bytes=max_body_bytes, rate_per_s=rate,
                      rate_burst=max(1, int(rate * 5)))
        if cert is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(cert), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load TLS certificate {cert} / key {key}: {exc}") from exc
        # once, in this process: migrations, key files, audit head, built-in policy, sweep
        Collector(cfg).close()
        os.environ[CONFIG_ENV] = cfg.to_json()
        # workers die with this process (prctl PDEATHSIG) and exit if it is already gone
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
        if debug_worker_header:
            os.environ[WORKER_HEADER_ENV] = "1"
        ucfg = uvicorn.Config("demotrace.server.app:create_app_from_env", factory=True,
                              workers=workers, ssl_certfile=str(cert) if cert else None,
                              ssl_keyfile=str(key) if key else None, log_level="warning",
                              access_log=False)
    except BaseException:
        sock.close()
        raise
    err_console.print(f"collector on {'https' if cert else 'http'}://{host}:{port} "
                      f"(database {cfg.db_url.split(':')[0]}, blobs {cfg.blobs_url.split(':')[0]}, "
                      f"{workers} worker processes; supervisor pid {os.getpid()})")
    try:
        _noticing_supervisor(Multiprocess)(ucfg, sockets=[sock]).run()
    finally:
        sock.close()


def _noticing_supervisor(base: type) -> type:
    """uvicorn's process supervisor ``base`` (``uvicorn.supervisors.Multiprocess``, passed in so
    uvicorn is imported only by ``server``) that prints one line on stderr when it replaces a
    dead worker: ``worker <old pid> stopped (<how>); replaced by worker <new pid>``.

    It wraps ``keep_subprocess_alive`` (uvicorn 0.54: called every 0.5 s, it replaces each
    worker that is dead or does not answer its health-check ping within
    ``timeout_worker_healthcheck``) and compares the worker list before and after; uvicorn
    itself logs "Child process [pid] died" only at INFO, below the ``warning`` level used here.
    A worker that failed at start-up is not replaced (uvicorn stops instead), so no line.
    """

    class Noticing(base):  # type: ignore[misc, valid-type]
        def keep_subprocess_alive(self) -> None:
            before = list(self.processes)
            super().keep_subprocess_alive()
            for old, new in zip(before, self.processes, strict=False):
                if new is not old:
                    err_console.print(f"worker {old.pid} stopped ({_how(old.exitcode)}); "
                                      f"replaced by worker {new.pid}", highlight=False,
                                      soft_wrap=True)

    return Noticing


def _how(exitcode: int | None) -> str:
    """A multiprocessing exit code in words: ``-9`` → ``killed by SIGKILL``, ``1`` → ``exit
    status 1``."""
    import signal

    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"


def _warn_if_exposed(host: str, cert: Path | None) -> None:
    """Warn on stderr when ``host`` is not a loopback address (and louder without TLS)."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        err_console.print(f"[yellow]warning:[/] binding to {host}: reachable from the network"
                          + ("" if cert else " WITHOUT TLS (pass --cert/--key)"))


def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready TCP socket bound to ``host:port`` (SO_REUSEADDR, as uvicorn does).

    Raises:
        ConfigError: the address cannot be resolved or bound (port in use, no permission).
    """
    try:
        family, _t, _p, _c, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve --host {host!r}: {exc}") from exc
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


@admin_app.command("enroll-code")
def enroll_code(
    role: str = typer.Option("device", "--role", help="device | person | curator | admin | auditor"),
    person: str = typer.Option(None, "--person", help="The person's identity (e-mail-like), for device/person codes."),
    ttl_hours: float = typer.Option(168.0, "--ttl-hours", callback=_finite, help="Lifetime of the code (hours)."),
    data_dir: str = DATA_DIR,
    database_url: str = DB_URL,
) -> None:
    """Create a one-time enrollment code (printed once; exchange it with `demotrace device enroll`
    or POST /v1/enroll)."""
    from ..server import auth
    from ..server.db import Database
    from ..server.keys import Pseudonymiser

    cfg = _config(data_dir, database_url)
    cfg.ensure_dirs()
    db = Database(cfg.db_url)
    try:
        sid = Pseudonymiser.from_file(cfg.pseudonym_key_path, create=True).subject_id(person) if person else None
        with db.session() as s:
            code, exp = auth.create_enrollment_code(s, role, subject_id=sid, created_by="cli",
                                                    ttl_s=int(ttl_hours * 3600))
    finally:
        db.dispose()
    console.print(code, highlight=False, soft_wrap=True)
    err_console.print(f"one-time {role} code, valid until {exp.isoformat()}")


@admin_app.command("policy-add")
def policy_add(
    policy_file: Path = typer.Argument(..., help="The policy TOML (as read by `demotrace policy`)."),
    current: bool = typer.Option(False, "--current", help="Make it the current version (what devices fetch)."),
    data_dir: str = DATA_DIR,
    database_url: str = DB_URL,
) -> None:
    """Store a capture-policy version on the collector (versions are immutable: a changed text
    needs a new `version`); bundles whose consent names an unknown version are refused."""
    from ..server import policies
    from ..server.db import Database

    try:
        body = policy_file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read policy file {policy_file}: {exc}") from exc
    cfg = _config(data_dir, database_url)
    cfg.ensure_dirs()
    db = Database(cfg.db_url)
    try:
        with db.session() as s:
            policies.ensure_builtin(s)
            r = policies.store_policy(s, body, "cli", make_current=current)
    finally:
        db.dispose()
    console.print(f"policy version {r['version']} " + ("stored" if r["created"] else "already stored")
                  + (", current" if r["is_current"] else ""), highlight=False)


@admin_app.command("policies")
def policy_list(data_dir: str = DATA_DIR, database_url: str = DB_URL) -> None:
    """List the collector's policy versions (newest first; * marks the current one)."""
    from ..server import policies
    from ..server.db import Database

    cfg = _config(data_dir, database_url)
    cfg.ensure_dirs()
    db = Database(cfg.db_url)
    try:
        with db.session() as s:
            policies.ensure_builtin(s)
            rows = policies.list_policies(s)
    finally:
        db.dispose()
    for r in rows:
        console.print(f"{'*' if r['is_current'] else ' '} {r['version']}  notice {r['notice_sha256'][:16]}  "
                      f"{r['uploaded_at'][:19]}  by {r['uploaded_by']}", highlight=False)


@device_app.command("policy")
def device_policy(
    save: bool = typer.Option(False, "--save", help="Write it to <home>/policy.toml (recording then needs `demotrace enroll` again if the version or notice changed)."),
    home: str = typer.Option(None, "--home", help="demotrace home (default $DEMOTRACE_HOME)."),
) -> None:
    """Fetch the collector's current capture policy (GET /v1/policy/current) and show its
    version and notice; with --save, make it this device's policy."""
    import httpx

    from ..paths import Paths
    from ..privacy.policy import POLICY_FILE, Policy
    from ..server.errors import UploadError
    from ..upload import Enrollment

    paths = Paths.from_env(home)
    enr = Enrollment.load(paths.home)
    try:
        r = httpx.get(enr.url.rstrip("/") + "/v1/policy/current", timeout=30,
                      headers={"authorization": f"Bearer {enr.credential}"}, verify=enr.ca or True)
    except httpx.HTTPError as exc:
        raise UploadError(f"cannot reach the collector at {enr.url}: {exc}") from exc
    if r.status_code != 200:
        raise UploadError(f"collector refused the policy request with HTTP {r.status_code}: "
                          f"{r.text[:200]}")
    doc = r.json()
    pol = Policy.from_toml(doc["toml"], f"{enr.url} policy version {doc['version']}")
    console.print(f"current policy: version {pol.version} (notice sha256 {pol.notice_sha256[:16]})",
                  highlight=False)
    console.print(pol.notice, highlight=False, soft_wrap=True)
    import tomllib

    from ..privacy.policy import with_builtin_floor
    from .privacy import floor_warnings

    declared = tomllib.loads(doc["toml"])  # what the org policy removes from the floor is kept: warn
    for note in floor_warnings(with_builtin_floor(pol, declared=declared), declared):
        err_console.print(f"warning: {note}", highlight=False, markup=False)
    if save:
        target = paths.ensure().home / POLICY_FILE
        tmp = target.with_suffix(".tmp")
        tmp.write_text(doc["toml"], encoding="utf-8")
        tmp.replace(target)
        console.print(f"saved to {target}; run `demotrace enroll` to read and accept it")


@device_app.command("enroll")
def device_enroll(
    server_url: str = typer.Option(..., "--server", help="Collector URL, e.g. https://collector.example:8470"),
    code: str = typer.Option(..., "--code", help="The one-time code from an admin."),
    label: str = typer.Option("", "--label", help="A name for this device (shown to admins)."),
    ca: str = typer.Option(None, "--ca", help="CA bundle to trust for the collector's TLS certificate."),
    home: str = typer.Option(None, "--home", help="demotrace home (default $DEMOTRACE_HOME)."),
) -> None:
    """Exchange a one-time code for this device's credential (saved 0600 in the home folder)."""
    from ..paths import Paths
    from ..upload import Enrollment, UploadClient, check_server_url

    server_url = check_server_url(server_url)
    paths = Paths.from_env(home).ensure()
    with UploadClient(server_url, verify=ca or True) as c:
        token = c.enroll(code, label)
    path = Enrollment(server_url, token, ca).save(paths.home)
    console.print(f"enrolled; credential saved in {path}")


def upload(
    bundles: list[Path] = typer.Argument(None, help="Bundle folders to upload (default: every sealed bundle in <home>/sealed)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the local bundle after the server acknowledged it."),
    home: str = typer.Option(None, "--home", help="demotrace home (default $DEMOTRACE_HOME)."),
) -> None:
    """Upload sealed bundles (resumable, retried; each is deleted locally only after the server
    acknowledged its commit)."""
    from ..paths import Paths
    from ..upload import Enrollment

    from .common import writable_paths

    paths = writable_paths(home)  # upload writes its lock, tombstones and deletes bundles (bug bash 6 L4)
    enr = Enrollment.load(paths.home)
    with _upload_lock(paths.home):
        _upload_all(paths, enr, bundles, keep, home)


@contextlib.contextmanager
def _upload_lock(home: Path) -> Iterator[None]:
    """One ``demotrace upload`` per home at a time (``<home>/upload.lock``, flock): a second one
    waits, then finds only what is still to upload (bug bash 3: two at once uploaded the same
    bundle and the one that lost the race failed with "No such file or directory")."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "upload.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err_console.print("another `demotrace upload` is running for this home; waiting for it")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _upload_all(paths: Any, enr: Any, bundles: list[Path] | None, keep: bool,
                home: str | None) -> None:
    from ..upload import SessionRefused, UploadClient

    if not bundles:
        from ..privacy.bundle import bundle_ids, sealed_root

        bundles = [sealed_root(paths) / b for b in bundle_ids(paths)]
        if not bundles:
            console.print("no sealed bundles to upload (run `demotrace seal` first)")
            return
    failed = 0
    with UploadClient(enr.url, enr.credential, verify=enr.ca or True) as c:
        for b in bundles:
            try:
                r = c.upload_path(b, delete_local=not keep, home=home)
            except SessionRefused as exc:  # deleted by its person on the server: final
                failed += 1
                err_console.print(f"[yellow]refused[/] {b}: {exc}", highlight=False)
                continue
            except Exception as exc:  # report and go on with the next bundle
                failed += 1
                err_console.print(f"[red]failed[/] {b}: {exc}", highlight=False)
                continue
            console.print(f"{b}: committed {r.bundle_id} ({r.n_blobs} blobs, "
                          f"{r.total_bytes} bytes, {r.sent_blobs} sent)"
                          + (", local copy deleted" if r.deleted_local else ""), highlight=False,
                          soft_wrap=True)  # the full id, never wrapped: the API takes only it
    if failed:
        raise typer.Exit(1)


@audit_app.command("export")
def audit_export(
    out: Path = typer.Argument(..., help="File to write the export document to (JSON)."),
    data_dir: str = DATA_DIR,
    database_url: str = DB_URL,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> None:
    """Verify the stored log, sign a checkpoint at the head and export the log up to it
    (server host). Refuses (exit 1, nothing signed) when the stored log does not verify."""
    from ..server.audit import AuditLog, Signer, export_document
    from ..server.db import Database
    from ..server.errors import AuditVerifyError

    cfg = _config(data_dir, database_url, checkpoint_every=checkpoint_every)
    db = Database(cfg.db_url)
    try:
        signer = Signer.from_file(cfg.audit_key_path)
        try:
            with db.session() as s:
                AuditLog.ensure_head(s)
                upto = AuditLog(signer, cfg.checkpoint_every).checkpoint(s)
        except AuditVerifyError as exc:
            _print_problems("stored audit log FAILED verification; refusing to sign an export:",
                            exc.problems)
            sys.exit(1)
        with db.session() as s:
            doc = export_document(s, signer.public_raw, signer.key_id, upto=upto,
                                  checkpoint_every=cfg.checkpoint_every)
    finally:
        db.dispose()
    out.write_text(json.dumps(doc, indent=1))
    console.print(f"{len(doc['entries'])} entries, {len(doc['checkpoints'])} checkpoints → {out}")


def _print_problems(title: str, problems: list[str]) -> None:
    err_console.print(f"[bold red]{title}[/]")
    for p in problems:
        err_console.print(f"  - {p}", highlight=False)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from exc


@audit_app.command("verify")
def audit_verify(
    export_file: Path = typer.Argument(None, help="An export document (from `audit export` or GET /v1/audit/export). Omit to check the server database directly."),
    public_key: str = typer.Option(None, "--public-key", help="Trusted Ed25519 public key: 64 hex digits, or a file holding them."),
    anchor: Path = typer.Option(None, "--anchor", help="A checkpoint kept from an earlier export (JSON; or that whole export): the log must extend it."),
    save_anchor: Path = typer.Option(None, "--save-anchor", help="After a successful check, write the newest signed checkpoint here (the next --anchor)."),
    data_dir: str = DATA_DIR,
    database_url: str = DB_URL,
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> None:
    """Check the access log: every entry hash, the chain, seq contiguity, every signed
    checkpoint, the required checkpoint cadence, (database) the audit_head row, (export) a
    checkpoint at the last entry, and (--anchor) that the log extends a kept checkpoint.
    Exit 0 if intact, 1 with every problem listed otherwise."""
    from ..server.audit import Signer, export_document, load_anchor, read_head, verify
    from ..server.errors import AuditVerifyError

    head = None
    if export_file is not None:
        doc = _read_json(export_file, "audit export")
        every = checkpoint_every
    else:
        from sqlalchemy.exc import OperationalError

        from ..server.db import Database, unreachable

        cfg = _config(data_dir, database_url, checkpoint_every=checkpoint_every)
        every = cfg.checkpoint_every
        signer = Signer.from_file(cfg.audit_key_path)
        db = Database(cfg.db_url, run_migrations=False)
        try:
            with db.session() as s:
                doc = export_document(s, signer.public_raw, signer.key_id,
                                      checkpoint_every=every)
                head = read_head(s) or (0, "0" * 64)
        except OperationalError as exc:
            raise unreachable(cfg.db_url, exc) from None
        finally:
            db.dispose()
    trusted = None
    if public_key:
        text = Path(public_key).read_text().strip() if Path(public_key).is_file() else public_key
        try:
            trusted = bytes.fromhex(text)
        except ValueError as exc:
            raise ConfigError(f"--public-key: not hex ({exc})") from exc
    anchor_cp = load_anchor(_read_json(anchor, "anchor"), where=f"--anchor {anchor}") if anchor else None
    try:
        rep = verify(doc, trusted_public_key=trusted, anchor=anchor_cp, head=head,
                     checkpoint_every=every, require_signed_end=export_file is not None)
    except AuditVerifyError as exc:
        _print_problems("audit log FAILED verification:", exc.problems)
        sys.exit(1)
    console.print(f"audit log OK: {rep.entries} entries, {rep.checkpoints} signed checkpoints, "
                  f"newest signed seq {rep.last_signed_seq}"
                  + (f", {rep.unsigned_tail} newer entries not yet signed" if rep.unsigned_tail else "")
                  + (f", extends the anchor at seq {rep.anchor_seq}" if rep.anchor_seq else ""),
                  highlight=False)
    if save_anchor is not None and rep.newest_checkpoint is not None:
        save_anchor.write_text(json.dumps(rep.newest_checkpoint, indent=1))
        console.print(f"anchor (checkpoint {rep.newest_checkpoint['seq']}) saved to {save_anchor}",
                      highlight=False)


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("server")(server)
    app.command("upload")(upload)
    app.add_typer(admin_app, name="admin")
    app.add_typer(device_app, name="device")
    app.add_typer(audit_app, name="audit")
