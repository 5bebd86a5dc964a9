"""The service's records: readers, the cases they were given, their attempts.

SQLite by default (one file), PostgreSQL when ``CHECK_SERVICE_DATABASE_URL``
says so; the schema is created and upgraded by Alembic migrations
(``service/migrations``) when the service starts.
"""
import datetime
import pathlib

from sqlalchemy import (Boolean, Column, DateTime, ForeignKey, Integer, String, Text, UniqueConstraint,
                        create_engine, event)
from sqlalchemy.orm import declarative_base, sessionmaker

Base = declarative_base()
HERE = pathlib.Path(__file__).resolve().parent


def now():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


class Reader(Base):
    __tablename__ = "readers"
    token = Column(String(64), primary_key=True)
    created_at = Column(DateTime, nullable=False, default=now)


class Case(Base):
    __tablename__ = "cases"
    id = Column(String(32), primary_key=True)
    token = Column(String(64), ForeignKey("readers.token"), nullable=False, index=True)
    assignment = Column(String(64), nullable=False)
    part = Column(String(64), nullable=False)
    seed = Column(String(32), nullable=False)
    created_at = Column(DateTime, nullable=False, default=now)
    expires_at = Column(DateTime, nullable=False)


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("case_id", name="one_attempt_per_case"),)
    id = Column(Integer, primary_key=True, autoincrement=True)
    case_id = Column(String(32), ForeignKey("cases.id"), nullable=False)
    token = Column(String(64), ForeignKey("readers.token"), nullable=False, index=True)
    assignment = Column(String(64), nullable=False)
    part = Column(String(64), nullable=False)
    passed = Column(Boolean, nullable=False)
    message = Column(Text, nullable=True)
    created_at = Column(DateTime, nullable=False, default=now)


def default_url():
    return f"sqlite:///{HERE.parent / 'service-data' / 'checks.db'}"


def migrate(url):
    """Bring the database at ``url`` to the newest schema (Alembic ``upgrade head``)."""
    from alembic import command
    from alembic.config import Config

    if url.startswith("sqlite:///"):
        pathlib.Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(HERE / "migrations"))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def engine_for(url):
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(connection, _):
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")  # several workers read while one writes
            # In WAL mode, NORMAL loses no committed transaction when the process dies
            # (kill -9); only a power cut can take the newest ones. PostgreSQL for more.
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def sessions(url):
    migrate(url)
    return sessionmaker(bind=engine_for(url), expire_on_commit=False)
