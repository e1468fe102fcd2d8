"""The aggregator's stored state (SQLAlchemy 2): SQLite by default, PostgreSQL by URL.

These classes are storage, not API: routers answer with the schemas in ``aggregator.schemas``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    create_engine,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from native.errors import ConfigError

log = logging.getLogger(__name__)


def utcnow() -> dt.datetime:
    """Timezone-aware now in UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive; every stored datetime is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        dict[str, Any]: JSON, dt.datetime: DateTime(timezone=True),
    }


class EnrollmentCode(Base):
    """A one-time enrollment code; only its sha256 is stored."""

    __tablename__ = "enrollment_codes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
    used_at: Mapped[dt.datetime | None]
    gateway_id: Mapped[str | None] = mapped_column(String(32))


class Gateway(Base):
    """An enrolled gateway and its Ed25519 identity key."""

    __tablename__ = "gateways"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    pid: Mapped[int] = mapped_column(BigInteger, unique=True)
    label: Mapped[str] = mapped_column(String(128), default="")
    enrolled_at: Mapped[dt.datetime]
    revoked_at: Mapped[dt.datetime | None]


class Round(Base):
    """One federated round as the orchestrator records it."""

    __tablename__ = "rounds"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    stage: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[dt.datetime]
    updated_at: Mapped[dt.datetime]
    ended_at: Mapped[dt.datetime | None]
    selected: Mapped[int] = mapped_column(Integer, default=0)
    participants: Mapped[int] = mapped_column(Integer, default=0)
    dropouts: Mapped[int] = mapped_column(Integer, default=0)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    model_version: Mapped[int | None] = mapped_column(Integer)


class Blob(Base):
    """Content-addressed bytes (models, checkpoints), keyed by sha256."""

    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class ModelVersion(Base):
    """A signed global model version; ``manifest`` is exactly the bytes that were signed."""

    __tablename__ = "model_versions"
    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent: Mapped[int | None] = mapped_column(ForeignKey("model_versions.version"))
    round_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime]
    participants: Mapped[int] = mapped_column(Integer, default=0)
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    privacy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    inference_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    checkpoint_sha256: Mapped[str | None] = mapped_column(ForeignKey("blobs.sha256"))
    manifest: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    signer: Mapped[str] = mapped_column(String(64))


class Evaluation(Base):
    """One gateway's signed federated-evaluation report of one model version: metrics only.

    ``report`` and ``signature`` are exactly what the gateway sent (``native.evalreport``), so
    an auditor can re-verify them against the gateway's enrolled key; the other columns are that
    report decoded. One report per (version, gateway).
    """

    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("model_version", "gateway_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_version: Mapped[int] = mapped_column(ForeignKey("model_versions.version"), index=True)
    gateway_id: Mapped[str] = mapped_column(ForeignKey("gateways.id"))
    samples: Mapped[int] = mapped_column(BigInteger)
    loss_sum: Mapped[float] = mapped_column(Float(precision=53))
    confusion: Mapped[list[list[int]]] = mapped_column(JSON)
    report: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    received_at: Mapped[dt.datetime]


class Database:
    """Engine and sessions for one database URL (and, on PostgreSQL, one schema)."""

    def __init__(self, url: str, schema: str | None = None) -> None:
        try:
            engine = create_engine(url, pool_pre_ping=True,
                                   connect_args=_connect_args(url))
        except Exception as exc:  # SQLAlchemy raises several types for a bad URL
            raise ConfigError(f"bad database URL: {exc}") from None
        if schema is not None:
            if engine.dialect.name != "postgresql":
                raise ConfigError("database_schema is only supported on PostgreSQL")
            engine = engine.execution_options(schema_translate_map={None: schema})
        self.engine: Engine = engine
        self.schema = schema
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Create the schema and tables that do not exist yet (restart-safe)."""
        with self.engine.begin() as conn:
            if self.schema is not None:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
            Base.metadata.create_all(conn)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    def new_session(self) -> Session:
        """A bare session; the caller commits, rolls back and closes it."""
        return self._sessions()

    def ping(self) -> bool:
        """True if the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            log.warning("database ping failed", exc_info=True)
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def _connect_args(url: str) -> dict[str, Any]:
    # FastAPI runs sync endpoints on a thread pool; SQLite connections must be shareable.
    return {"check_same_thread": False} if url.startswith("sqlite") else {}
