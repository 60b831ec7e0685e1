"""Engine and session factory, one per process (rebuilt after a worker forks)."""

from __future__ import annotations

import functools
import select
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker


def make_engine(database_url: str, *, timeout: float | None = None) -> Engine:
    """An engine tuned for the backend: WAL and a busy timeout on SQLite; on PostgreSQL fast
    connect failures, TCP keepalives and, with ``timeout``, a bound on every statement."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 15})
        event.listen(engine, "connect", _sqlite_pragmas)
        # Take the write lock when a transaction begins: a deferred transaction that reads and
        # then writes fails at once with "database is locked" when another process wrote between.
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
        return engine
    connect_args = {}
    postgresql = url.get_backend_name() == "postgresql"
    if postgresql:
        _decode_json_with_orjson()
        connect_args = postgresql_connect_args(timeout, dict(url.query))
    engine = create_engine(
        url,
        pool_pre_ping=not postgresql,  # PostgreSQL's connections: ``_closed_by_server``
        pool_size=5,
        max_overflow=10,
        pool_timeout=3,
        connect_args=connect_args,
    )
    if postgresql:
        event.listen(engine, "checkout", _closed_by_server())
    if postgresql and timeout:
        event.listen(engine, "do_connect", _bounded_connect(timeout))
    return engine


def _closed_by_server():
    """The pool's checkout hook: a pooled PostgreSQL connection the server has closed is
    discarded, without the round trip of a pre-ping (``SELECT 1`` on every checkout: a third of
    a millisecond of CPU and a wait for the server, on every request and twice a file in a
    worker).

    An idle connection has nothing to read; when its socket is readable, the server has
    closed it (a restart, an administrator's ``pg_terminate_backend``, an idle timeout: each
    sends its reason, then closes) or sent a notice. libpq reads what is there: a closed
    connection reports an error or a bad status, and SQLAlchemy retries the checkout with a
    new one (``DisconnectionError``). A server that went silent sends nothing: it is found by
    the bound on every wait (``_bounded_connection_class``) and the TCP keepalives, as before.
    """
    import psycopg  # here: SQLite-only processes never import psycopg
    from psycopg.pq import ConnStatus
    from sqlalchemy.exc import DisconnectionError

    def check(dbapi_connection, _record, _proxy) -> None:
        pgconn = dbapi_connection.pgconn
        for _ in range(8):  # the server's last message, then the end of the stream: two reads
            if pgconn.status != ConnStatus.OK:
                raise DisconnectionError("the server closed the connection")
            poller = select.poll()  # not select(): a process may hold over 1024 descriptors
            poller.register(pgconn.socket, select.POLLIN)
            if not poller.poll(0):
                return
            try:
                pgconn.consume_input()
            except psycopg.OperationalError as exc:
                raise DisconnectionError(str(exc)) from exc
        raise DisconnectionError("the server keeps sending to an idle connection")

    return check


def postgresql_connect_args(timeout: float | None, given: dict | None = None) -> dict:
    """libpq settings for a database that may go away or go silent, beside those ``given`` in
    DATABASE_URL's query (which win: a URL's ``connect_timeout`` stays, and its ``options``,
    e.g. ``-c search_path=app``, are kept with the statement timeout added).

    - connect_timeout: a connection attempt (TCP, then the server's greeting) gives up after 2 s;
    - TCP keepalives: an idle pooled connection whose peer vanished is found within ~20 s;
    - with ``timeout``: the server cancels a statement that runs longer (statement_timeout),
      and unacknowledged data is given up on after it (tcp_user_timeout) when packets are lost.
    """
    args = {
        "connect_timeout": 2,
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
    }
    if timeout:
        millis = int(timeout * 1000)
        args |= {"options": f"-c statement_timeout={millis}", "tcp_user_timeout": millis}
    given = {key: value for key, value in (given or {}).items() if isinstance(value, str)}
    if "options" in given and "options" in args:
        given["options"] = f"{args['options']} {given['options']}"  # the URL's last: it wins
    return args | given


def _bounded_connect(timeout: float):
    """SQLAlchemy's ``do_connect`` hook: connections whose every wait for the server is
    bounded by ``timeout`` (see ``_bounded_connection_class``)."""
    bounded = _bounded_connection_class()

    def connect(dialect, connection_record, cargs, cparams):
        connection = bounded.connect(*cargs, **cparams)
        connection.wait_timeout = timeout
        return connection

    return connect


@functools.cache
def _bounded_connection_class():
    """Built on first use: SQLite-only processes never import psycopg."""
    import psycopg
    from psycopg import errors

    class BoundedConnection(psycopg.Connection):
        """A psycopg connection that waits for the server at most ``wait_timeout`` seconds.

        A server that went silent (a dead host, a dropped path: nothing refused, nothing
        answered) would otherwise hold the request's thread forever; no server-side timeout
        can fire when the server is not there. psycopg's ``Connection.wait`` takes a timeout
        (its own wait functions raise ``_WaitTimeout``, an OperationalError); this applies one
        to every wait. The connection is closed then: its protocol state is unknown, and a
        closed connection is one SQLAlchemy's pool discards. The silent-database fault test
        (tests/faults/test_faults.py) fails if a psycopg change bypasses ``wait``.
        """

        wait_timeout: float | None = None

        def wait(self, gen, interval=0.1, timeout=None):
            try:
                return super().wait(gen, interval=interval, timeout=timeout or self.wait_timeout)
            except errors._WaitTimeout:
                self.close()
                raise errors.OperationalError(
                    f"the database did not answer within {self.wait_timeout} s"
                ) from None

    return BoundedConnection


def _decode_json_with_orjson() -> None:
    """psycopg decodes JSON columns (a file's metadata) with orjson: a page of 100 files
    decoded 100 documents with the json module. Process-wide, as psycopg's setting is."""
    import orjson
    from psycopg.types.json import set_json_loads

    set_json_loads(orjson.loads)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by the "begin" listener
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit (a 201) survives a power loss. NORMAL in WAL mode may lose the last
    # commits, after which the reaper would delete the staged bytes of rows that vanished.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction for Alembic to migrate with.

    On SQLite, foreign keys are off while it runs and checked before it commits: a batch
    migration rebuilds a table by copying it, dropping the old one and renaming the copy, and
    with foreign keys on, dropping the old ``files`` would cascade to every outbox entry (the
    pragma has no effect inside a transaction, so it is set before one begins).
    """
    with engine.connect() as connection:
        sqlite = engine.dialect.name == "sqlite"
        if sqlite:
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with connection.begin():
                yield connection
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise RuntimeError(f"the migration broke foreign keys: {broken[:5]}")
        finally:
            if sqlite:
                connection.connection.driver_connection.execute("PRAGMA foreign_keys=ON")


def foreign_keys_enforced(connection: Connection) -> bool:
    """Whether SQLite enforces foreign keys on this connection (always True elsewhere)."""
    if connection.dialect.name != "sqlite":
        return True
    return bool(connection.exec_driver_sql("PRAGMA foreign_keys").scalar())


def core(session: Session) -> Connection:
    """The session's connection, for the Core statements of a change on the hot paths (a new
    file, a status change, the outbox): the ORM's bulk-DML layer that ``session.execute`` puts
    around a statement on a mapped table costs more than the statement itself
    (bench/RESULTS.md). Pending objects are flushed first, as ``session.execute``'s autoflush
    would; such statements never touch objects the session holds."""
    session.flush()
    return session.connection()


class Database:
    """Holds one engine and its session factory; ``session()`` is a unit of work."""

    def __init__(self, database_url: str, *, timeout: float | None = None) -> None:
        self.engine = make_engine(database_url, timeout=timeout)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        # Reads of one statement need no transaction of their own: on PostgreSQL they run in
        # autocommit, which saves the BEGIN and COMMIT round trips. SQLite keeps its usual
        # transaction (its pool hands out the same connection; the lock is brief there).
        readonly = (
            self.engine.execution_options(isolation_level="AUTOCOMMIT")
            if self.engine.dialect.name == "postgresql"
            else self.engine
        )
        self._read_factory = sessionmaker(readonly, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on any error."""
        session = self._factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A session for one read statement (no writes: nothing is committed)."""
        session = self._read_factory()
        try:
            yield session
        finally:
            session.close()

    def ring_with(self, doorbell) -> None:
        """Ring ``doorbell`` after each commit that wrote events (common.files.events)."""
        self._factory.configure(info={"events.doorbell": doorbell})

    def dispose(self) -> None:
        self.engine.dispose()

    @property
    def supports_skip_locked(self) -> bool:
        return self.engine.dialect.name == "postgresql"
