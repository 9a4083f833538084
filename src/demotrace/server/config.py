"""Settings of the collector service.

One frozen :class:`ServerConfig`, built once by the CLI (``demotrace server``) or a test and
passed down explicitly; nothing reads settings at import time.

Files under ``data_dir`` (created on first start, folders 0700, key files 0600)::

    collector.db            SQLite metadata database (when no database URL is given)
    blobs/                  local content-addressed blob store (when no blob URL is given)
    keys/master.key         32-byte server master key (wraps every per-person data key)
    keys/pseudonym.key      32-byte secret of the pseudonymous subject ids (HMAC-SHA256)
    keys/audit-ed25519.pem  Ed25519 private key that signs audit-log checkpoints

Environment overrides (used when the matching argument is ``None``): ``DEMOTRACE_SERVER_DATA``,
``DEMOTRACE_DATABASE_URL``, ``DEMOTRACE_BLOB_URL``, ``DEMOTRACE_MASTER_KEY_FILE``,
``DEMOTRACE_AUDIT_CHECKPOINT_EVERY``.

Worker processes (``demotrace server --workers N``) receive the parent's whole config as JSON
(:meth:`ServerConfig.to_json` / :meth:`ServerConfig.from_json`) in the environment variable
:data:`CONFIG_ENV`, so every worker runs with exactly the settings the parent checked.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

from ..errors import ConfigError

#: Default request-body limit: 64 MiB (a sealed bundle blob is one encoded frame or an events
#: chunk, normally well under 1 MiB; the limit only guards memory).
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024

#: Environment variable carrying a :class:`ServerConfig` as JSON from ``demotrace server`` to
#: its worker processes (read by :func:`demotrace.server.app.create_app_from_env`).
CONFIG_ENV = "DEMOTRACE_SERVER_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    """Settings of one collector instance.

    - ``data_dir``: folder of the embedded database, local blobs and key files.
    - ``database_url``: SQLAlchemy URL; ``None`` → ``sqlite:///<data_dir>/collector.db``.
      PostgreSQL: ``postgresql+psycopg://user@host:port/dbname``.
    - ``blob_url``: ``None`` → local folder ``<data_dir>/blobs``; ``file:///abs/path``; or
      ``s3://bucket/prefix`` (boto3; credentials and region from the standard AWS environment
      variables / files, see :class:`~demotrace.server.blobs.S3BlobStore`).
    - ``s3_endpoint_url``: ``http(s)://host[:port]`` of an S3-compatible service (SeaweedFS,
      MinIO, Ceph RGW, …); ``None`` → ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` or AWS.
      Only meaningful with an ``s3://`` ``blob_url``.
    - ``master_key_file``: ``None`` → ``<data_dir>/keys/master.key``.
    - ``max_body_bytes``: request bodies larger than this get 413 (bytes).
    - ``rate_per_s`` / ``rate_burst``: token bucket per credential (or per client address when
      unauthenticated): sustained requests per second and bucket size (requests).
    - ``checkpoint_every``: the REQUIRED audit checkpoint cadence (entries): a checkpoint is
      signed whenever the log's ``seq`` reaches a multiple of it, and ``audit verify`` fails
      when one is missing (see :mod:`.audit`); env ``DEMOTRACE_AUDIT_CHECKPOINT_EVERY``.
    - ``enrollment_ttl_s``: lifetime of a one-time enrollment code (seconds).
    - ``k_min_persons``: minimum persons per group in any aggregate (DESIGN.md §2.4, §8.11: 10).
    - ``bulk_read_max_bundles`` / ``bulk_read_window_s``: a curator reading more than this many
      distinct bundles (bundles) within this window (seconds) raises a bulk-read alert in the
      access log (DESIGN.md §8.8; defaults 100 per 3600 s, see :mod:`.alerts`).
    """

    data_dir: Path
    database_url: str | None = None
    blob_url: str | None = None
    s3_endpoint_url: str | None = None
    master_key_file: Path | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    rate_per_s: float = 200.0
    rate_burst: int = 1000
    checkpoint_every: int = 100
    enrollment_ttl_s: int = 7 * 24 * 3600
    k_min_persons: int = 10
    bulk_read_max_bundles: int = 100
    bulk_read_window_s: float = 3600.0
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_body_bytes <= 0:
            raise ConfigError(f"max_body_bytes must be positive, got {self.max_body_bytes}")
        if self.rate_per_s <= 0 or self.rate_burst <= 0:
            raise ConfigError("rate_per_s and rate_burst must be positive")
        if self.checkpoint_every <= 0:
            raise ConfigError(f"checkpoint_every must be positive, got {self.checkpoint_every}")
        if self.bulk_read_max_bundles < 1 or self.bulk_read_window_s <= 0:
            raise ConfigError("bulk_read_max_bundles must be >= 1 and bulk_read_window_s > 0")
        if self.k_min_persons < 2:
            raise ConfigError(f"k_min_persons must be at least 2, got {self.k_min_persons}")
        if self.s3_endpoint_url is not None:
            ep = urlparse(self.s3_endpoint_url)
            if ep.scheme not in ("http", "https") or not ep.hostname:
                raise ConfigError(f"S3 endpoint URL {self.s3_endpoint_url!r}: expected "
                                  "http(s)://HOST[:PORT]")
            if not (self.blob_url or "").startswith("s3://"):
                raise ConfigError(f"an S3 endpoint ({self.s3_endpoint_url}) was given but the "
                                  f"blob URL is {self.blobs_url!r}; use s3://BUCKET/PREFIX")

    @classmethod
    def from_env(
        cls,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        database_url: str | None = None,
        blob_url: str | None = None,
        master_key_file: str | os.PathLike[str] | None = None,
        **kw: object,
    ) -> ServerConfig:
        """Build a config from arguments, falling back to the environment (module docstring).

        Raises:
            ConfigError: no data folder given and ``DEMOTRACE_SERVER_DATA`` is unset.
        """
        data = data_dir or os.environ.get("DEMOTRACE_SERVER_DATA")
        if not data:
            raise ConfigError(
                "no server data folder: pass --data-dir or set DEMOTRACE_SERVER_DATA"
            )
        mk = master_key_file or os.environ.get("DEMOTRACE_MASTER_KEY_FILE")
        every = os.environ.get("DEMOTRACE_AUDIT_CHECKPOINT_EVERY")
        if kw.get("checkpoint_every") is None:
            kw.pop("checkpoint_every", None)
            if every:
                try:
                    kw["checkpoint_every"] = int(every)
                except ValueError as exc:
                    raise ConfigError("DEMOTRACE_AUDIT_CHECKPOINT_EVERY must be a whole number "
                                      f"of entries, got {every!r}") from exc
        return cls(
            data_dir=Path(data).expanduser().resolve(),
            database_url=database_url or os.environ.get("DEMOTRACE_DATABASE_URL") or None,
            blob_url=blob_url or os.environ.get("DEMOTRACE_BLOB_URL") or None,
            master_key_file=Path(mk).expanduser().resolve() if mk else None,
            **kw,  # type: ignore[arg-type]
        )

    def to_json(self) -> str:
        """The config as one JSON object (paths as strings); inverse of :meth:`from_json`.
        May hold a database password (in ``database_url``): keep it out of logs."""
        d = asdict(self)
        for k in ("data_dir", "master_key_file"):
            if d[k] is not None:
                d[k] = str(d[k])
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, where: str = CONFIG_ENV) -> ServerConfig:
        """Rebuild a config written by :meth:`to_json`.

        Raises:
            ConfigError: ``text`` is not a JSON object of known fields, or a value is invalid
                (the message names ``where`` and the field).
        """
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{where}: not JSON ({exc})") from exc
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}")
        if "data_dir" not in d:
            raise ConfigError(f"{where}: data_dir is missing")
        d["data_dir"] = Path(d["data_dir"])
        if d.get("master_key_file") is not None:
            d["master_key_file"] = Path(d["master_key_file"])
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"{where}: {exc}") from exc

    # -- derived locations ----------------------------------------------------------------------
    @property
    def db_url(self) -> str:
        """The effective database URL."""
        return self.database_url or f"sqlite:///{self.data_dir / 'collector.db'}"

    @property
    def blobs_url(self) -> str:
        """The effective blob-store URL."""
        return self.blob_url or (self.data_dir / "blobs").as_uri()

    @property
    def keys_dir(self) -> Path:
        """Folder of the server's key files (0700)."""
        return self.data_dir / "keys"

    @property
    def master_key_path(self) -> Path:
        """The master key file (32 bytes, 0600)."""
        return self.master_key_file or self.keys_dir / "master.key"

    @property
    def pseudonym_key_path(self) -> Path:
        """The pseudonym secret file (32 bytes, 0600)."""
        return self.keys_dir / "pseudonym.key"

    @property
    def audit_key_path(self) -> Path:
        """The Ed25519 checkpoint-signing key (PEM, PKCS#8, 0600)."""
        return self.keys_dir / "audit-ed25519.pem"

    def ensure_dirs(self) -> None:
        """Create ``data_dir`` and ``keys/`` with owner-only permissions."""
        for d in (self.data_dir, self.keys_dir):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
