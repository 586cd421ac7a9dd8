"""Opening the SQL databases refinery keeps state in: the inference log, the trigger log, the registry.

Each is named by a SQLAlchemy URL: a sqlite file in the embedded deployment, PostgreSQL (or MySQL) on a
cluster. :func:`create_engine` turns such a URL into an engine the same way for all of them, and raises
the caller's error class with a message that names the URL, its password masked, and what failed.

SQLAlchemy is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from refinery.errors import RefineryError

if TYPE_CHECKING:
    import sqlalchemy
    from sqlalchemy.engine import URL

# Back ends whose drivers take a ``connect_timeout`` connect argument.
_CONNECT_TIMEOUT_BACKENDS = frozenset({"postgresql", "mysql"})
# How often create_tables checks and creates again after losing a race to another creator.
_CREATE_ATTEMPTS = 5


def mask_url(url: str | URL) -> str:
    """The URL with any password replaced by ``***``, safe for messages and logs.

    A string that is not a SQLAlchemy URL but holds credentials (``scheme://user:pw@host``) keeps only
    its scheme and what follows the last ``@``; any other string is returned unchanged.
    """
    if not isinstance(url, str):
        return url.render_as_string(hide_password=True)
    if "://" in url and "@" in url:
        try:
            from sqlalchemy.engine import make_url

            return make_url(url).render_as_string(hide_password=True)
        except Exception:
            scheme, _, rest = url.partition("://")
            return f"{scheme}://***@{rest.rpartition('@')[2]}"
    return url


def parse_url(url: str | URL, *, what: str, error: type[RefineryError]) -> URL:
    """Parse a SQLAlchemy URL.

    Args:
        url: The URL, as a string or already parsed.
        what: What the database holds, for messages (e.g. ``"trigger log"``).
        error: The exception class to raise.

    Raises:
        RefineryError: (as ``error``) ``url`` is not a SQLAlchemy URL.
    """
    from sqlalchemy.engine import make_url

    try:
        return make_url(url)
    except Exception as exc:  # ArgumentError, or ValueError for a port that is not a number
        raise error(f"{what} URL {mask_url(str(url))!r} is not a SQLAlchemy URL: {exc}") from None


def create_engine(
    url: str | URL,
    *,
    what: str,
    error: type[RefineryError],
    sqlite_busy_timeout_s: float | None = None,
    sqlite_wal: bool = False,
    connect_timeout_s: float | None = None,
    pre_ping: bool = False,
    poolclass: type[sqlalchemy.pool.Pool] | None = None,
) -> sqlalchemy.Engine:
    """Create an engine for ``url``; for a sqlite file, create the file's folder first.

    Nothing is connected yet: an unreachable server shows up on first use (or in :func:`ping`).

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:////abs/path/state.db`` or ``postgresql+psycopg://u:pw@host/db``.
        what: What the database holds, for messages (e.g. ``"inference log"``, ``"registry"``).
        error: The exception class to raise (e.g. ``MonitoringError``).
        sqlite_busy_timeout_s: For sqlite, how long a connection waits for another's lock before failing.
        sqlite_wal: For sqlite, put the database in WAL mode, so readers run while others write.
        connect_timeout_s: For PostgreSQL and MySQL, how long connecting may take.
        pre_ping: For a server back end, check a pooled connection before handing it out.
        poolclass: SQLAlchemy pool class, e.g. ``NullPool`` for an engine used once.

    Raises:
        RefineryError: (as ``error``) the URL is invalid, the sqlite folder cannot be created, or the
            database driver is not installed; the message names the URL with its password masked.
    """
    import sqlalchemy

    parsed = parse_url(url, what=what, error=error)
    shown = mask_url(parsed)
    sqlite = parsed.get_backend_name() == "sqlite"
    connect_args: dict[str, Any] = {}
    options: dict[str, Any] = {}
    if sqlite:
        _make_sqlite_folder(parsed, what=what, error=error)
        if sqlite_busy_timeout_s is not None:
            connect_args["timeout"] = sqlite_busy_timeout_s
    else:
        if connect_timeout_s is not None and parsed.get_backend_name() in _CONNECT_TIMEOUT_BACKENDS:
            connect_args["connect_timeout"] = connect_timeout_s
        if pre_ping:
            options["pool_pre_ping"] = True
    if poolclass is not None:
        options["poolclass"] = poolclass
    try:
        engine = sqlalchemy.create_engine(parsed, connect_args=connect_args, **options)
    except ModuleNotFoundError as exc:
        raise error(f"{what} unreachable at {shown}: the database driver is not installed ({exc})") from exc
    except Exception as exc:  # unknown dialect, bad options
        raise error(f"{what} unreachable at {shown}: cannot create an engine: {exc}") from exc
    if sqlite and sqlite_wal:
        _set_sqlite_pragmas(engine, busy_timeout_s=sqlite_busy_timeout_s)
    return engine


def _make_sqlite_folder(parsed: URL, *, what: str, error: type[RefineryError]) -> None:
    """Create the folder of a sqlite database file (not of an in-memory or ``file:`` URI database)."""
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise error(
                f"{what} unreachable at {mask_url(parsed)}: cannot create the folder {folder} ({exc})"
            ) from exc


def _set_sqlite_pragmas(engine: sqlalchemy.Engine, *, busy_timeout_s: float | None) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        if busy_timeout_s is not None:
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cursor.close()


def is_sqlite_locked(exc: BaseException) -> bool:
    """Whether ``exc`` (a SQLAlchemy error) is sqlite reporting another connection's lock."""
    reason = str(getattr(exc, "orig", None) or exc)
    return "database is locked" in reason or "database table is locked" in reason


def create_tables(
    engine: sqlalchemy.Engine,
    metadata: sqlalchemy.MetaData,
    *,
    what: str,
    error: type[RefineryError],
) -> None:
    """Create the tables of ``metadata`` that the database lacks, safely beside others doing the same,
    and add the columns a table made by an earlier release lacks (as nullable columns: its rows hold
    NULL there).

    Processes (or threads) that all find a table missing all issue ``CREATE TABLE``; the losers fail with
    "already exists" on sqlite, DuplicateTable or a unique violation in the catalog on PostgreSQL, or a
    lock on sqlite. ``create_all`` creates one table after another, so a loser may also find some tables
    made and others not yet. After such a failure the check-and-create runs again, after a short wait,
    and creates only what is still missing.

    Raises:
        RefineryError: (as ``error``) the tables cannot be created and no other creator is at work (no
            lock, none of the tables there), or still after the last attempt; the message names the URL
            with its password masked.
    """
    import sqlalchemy

    for attempt in range(_CREATE_ATTEMPTS):
        try:
            metadata.create_all(engine, checkfirst=True)
            break
        except sqlalchemy.exc.SQLAlchemyError as exc:
            racing = is_sqlite_locked(exc) or _has_any_table(engine, metadata)
            if not racing or attempt == _CREATE_ATTEMPTS - 1:
                names = ", ".join(sorted(metadata.tables))
                raise error(
                    f"{what} at {mask_url(engine.url)}: cannot create the tables {names}: {exc}"
                ) from exc
            time.sleep(0.05 * (attempt + 1))

    _add_missing_columns(engine, metadata, what=what, error=error)


def _add_missing_columns(
    engine: sqlalchemy.Engine, metadata: sqlalchemy.MetaData, *, what: str, error: type[RefineryError]
) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for each column of ``metadata`` a table lacks. Several processes may
    try at once: a loser's statement fails, and the column is then there."""
    import sqlalchemy

    def columns(table: str) -> set[str]:
        return {c["name"] for c in sqlalchemy.inspect(engine).get_columns(table)}

    for table in metadata.sorted_tables:
        try:
            missing = [c for c in table.columns if c.name not in columns(table.name)]
        except sqlalchemy.exc.SQLAlchemyError as exc:
            raise error(f"{what} at {mask_url(engine.url)}: cannot read table {table.name}: {exc}") from exc
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            try:
                with engine.begin() as connection:
                    connection.exec_driver_sql(f"ALTER TABLE {table.name} ADD COLUMN {column.name} {kind}")
            except sqlalchemy.exc.SQLAlchemyError as exc:
                if column.name not in columns(table.name):
                    raise error(
                        f"{what} at {mask_url(engine.url)}: cannot add column {table.name}.{column.name}: {exc}"
                    ) from exc


def _has_any_table(engine: sqlalchemy.Engine, metadata: sqlalchemy.MetaData) -> bool:
    import sqlalchemy

    try:
        inspector = sqlalchemy.inspect(engine)
        return any(inspector.has_table(name) for name in metadata.tables)
    except sqlalchemy.exc.SQLAlchemyError:  # the database cannot be read either: no race to wait out
        return False


def ping(engine: sqlalchemy.Engine, *, what: str, error: type[RefineryError]) -> None:
    """Open one connection and run ``SELECT 1``, to fail early on a database that cannot be reached.

    Raises:
        RefineryError: (as ``error``) the connection failed; the message names the URL with its password
            masked and the driver's first line of explanation.
    """
    try:
        with engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")
    except Exception as exc:
        lines = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        detail = lines[0] if lines else type(exc).__name__
        raise error(f"{what} unreachable at {mask_url(engine.url)}: {detail}", unreachable=True) from exc
