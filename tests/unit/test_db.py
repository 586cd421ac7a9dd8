"""Opening state databases: sqlite folders, masked passwords, tables created beside other creators, and
the caller's error class on failure."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from refinery.db import create_engine, create_tables, mask_url, parse_url, ping
from refinery.errors import MonitoringError, RegistryError


def test_mask_url_hides_the_password_only() -> None:
    assert mask_url("postgresql://refinery:s3cret@db:5432/state") == "postgresql://refinery:***@db:5432/state"
    assert mask_url("sqlite:////abs/state.db") == "sqlite:////abs/state.db"
    assert mask_url("http://mlflow:5000") == "http://mlflow:5000"
    # Not a SQLAlchemy URL (the port is not a number), but the credentials still go.
    assert mask_url("postgresql://refinery:s3cret@db:port/state") == "postgresql://***@db:port/state"
    assert mask_url(parse_url("mysql://u:s3cret@h/d", what="x", error=MonitoringError)) == "mysql://u:***@h/d"


def test_sqlite_parent_folder_is_created(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "deeper" / "state.db"

    engine = create_engine(f"sqlite:///{db}", what="trigger log", error=MonitoringError)
    try:
        assert db.parent.is_dir()
        ping(engine, what="trigger log", error=MonitoringError)
        assert db.is_file()
    finally:
        engine.dispose()


def test_sqlite_wal_and_busy_timeout_are_applied(tmp_path: Path) -> None:
    engine = create_engine(
        f"sqlite:///{tmp_path / 'wal.db'}",
        what="inference log",
        error=MonitoringError,
        sqlite_busy_timeout_s=7,
        sqlite_wal=True,
    )
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 7000
    finally:
        engine.dispose()


def test_unwritable_sqlite_location_raises_the_given_error_naming_the_url(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the state folder should be")
    url = f"sqlite:///{blocker / 'state' / 'state.db'}"

    with pytest.raises(
        RegistryError, match=r"registry unreachable at sqlite:///.*not-a-folder/state/state\.db"
    ):
        create_engine(url, what="registry", error=RegistryError)
    assert blocker.is_file()


def test_sqlite_database_that_cannot_be_opened_fails_the_ping(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}", what="trigger log", error=MonitoringError)  # a folder
    try:
        with pytest.raises(MonitoringError, match=r"trigger log unreachable at sqlite:///.*: unable to open"):
            ping(engine, what="trigger log", error=MonitoringError)
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "url", ["not a url", "", "postgresql://refinery:s3cret@db:notaport/state"], ids=["words", "empty", "port"]
)
def test_invalid_url_raises_the_given_error(url: str) -> None:
    with pytest.raises(MonitoringError, match=r"inference log URL .* is not a SQLAlchemy URL") as info:
        create_engine(url, what="inference log", error=MonitoringError)
    assert "s3cret" not in str(info.value)


def test_unknown_dialect_raises_the_given_error() -> None:
    with pytest.raises(MonitoringError, match=r"trigger log unreachable at nosuchdb://h/d: cannot create"):
        create_engine("nosuchdb://h/d", what="trigger log", error=MonitoringError)


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg", "postgresql+psycopg2"])
def test_postgres_without_driver_or_server_raises_with_password_masked(driver: str) -> None:
    # No server listens on port 1: whether the driver is missing (create_engine) or the connection is
    # refused (ping), the caller's error names the URL with the password masked.
    url = f"{driver}://refinery:s3cret@127.0.0.1:1/state"
    with pytest.raises(
        RegistryError, match=re.escape(f"registry unreachable at {driver}://refinery:***@127.0.0.1:1/state")
    ) as info:
        engine = create_engine(
            url, what="registry", error=RegistryError, connect_timeout_s=5, poolclass=NullPool
        )
        try:
            ping(engine, what="registry", error=RegistryError)
        finally:
            engine.dispose()
    assert "s3cret" not in str(info.value)


def _two_tables() -> sa.MetaData:
    metadata = sa.MetaData()
    for name in ("first", "second"):
        sa.Table(name, metadata, sa.Column("id", sa.Integer, primary_key=True))
    return metadata


def test_create_tables_finishes_after_losing_a_race_midway(tmp_path: Path) -> None:
    # Another creator makes "first" between this one's check (neither table there) and its CREATE of
    # "first": that CREATE fails with "already exists" while "second" is still missing (the other
    # creator has not got to it); checking again creates it.
    url = f"sqlite:///{tmp_path / 'state.db'}"
    engine = create_engine(url, what="trigger log", error=MonitoringError)
    other = create_engine(url, what="trigger log", error=MonitoringError)
    metadata = _two_tables()
    raced: list[str] = []

    @sa.event.listens_for(metadata.tables["first"], "before_create")
    def _other_creator_wins(target: sa.Table, connection: sa.Connection, **kw: object) -> None:
        if not raced:
            raced.append(target.name)
            _two_tables().tables["first"].create(other)

    try:
        create_tables(engine, metadata, what="trigger log", error=MonitoringError)
        assert raced == ["first"]
        assert set(sa.inspect(engine).get_table_names()) == {"first", "second"}
    finally:
        engine.dispose()
        other.dispose()


def test_create_tables_that_cannot_be_made_raises_the_given_error_naming_the_url(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    db.write_bytes(b"not a sqlite database" * 100)
    engine = create_engine(f"sqlite:///{db}", what="trigger log", error=MonitoringError)
    try:
        with pytest.raises(
            MonitoringError,
            match=re.escape(f"trigger log at sqlite:///{db}: cannot create the tables first, second"),
        ):
            create_tables(engine, _two_tables(), what="trigger log", error=MonitoringError)
    finally:
        engine.dispose()
