"""Engine construction and migrations. Engines are built by the app factory, never at import."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def redact_db_url(url: str) -> str:
    """The URL with its password replaced, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine; SQLite gets WAL, foreign keys and a busy timeout for multi-threaded use."""
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True, pool_size=10, max_overflow=20)


def check_connection(engine: Engine) -> None:
    """Raise if the database cannot be reached."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to `revision` (idempotent)."""
    command.upgrade(alembic_config(url), revision)


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upsert(dialect: str, table: Any, key: list[str], update: list[str], only_if_changed: str | None = None) -> Any:
    """`INSERT ... ON CONFLICT (key) DO UPDATE SET update` for PostgreSQL and SQLite, to run with a list of
    rows (executemany). `only_if_changed`: leave a row that already has that value alone (no new tuple)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    where = None
    if only_if_changed is not None:
        where = table.c[only_if_changed] != stmt.excluded[only_if_changed]
    return stmt.on_conflict_do_update(index_elements=key, set_={c: stmt.excluded[c] for c in update}, where=where)


_RECORDSET_SQL: dict[tuple[Any, ...], str] = {}


def insert_rows(db: Any, table: Any, rows: list[dict[str, Any]], key: list[str] | None = None,
                update: list[str] | None = None, only_if_changed: str | None = None) -> None:
    """Insert many rows (all with the same keys) in one statement; with `key` and `update` an upsert as
    `upsert` makes. On PostgreSQL the rows travel as one JSON array, `INSERT ... SELECT ... FROM
    json_to_recordset(%s)`: one fixed statement (prepared once) and one C-encoded parameter whatever the
    count. executemany there is one round of the protocol per row with ~35 us of Python each; a multi-row
    VALUES is a new query text for psycopg to parse every time, and arrays per column are escaped element
    by element in Python: both slower. SQLite runs executemany (its loop is in C). An upsert's rows must
    not repeat a key (PostgreSQL will not change a row twice in one statement). `only_if_changed` as in
    `upsert`."""
    if not rows:
        return
    dialect = db.get_bind().dialect
    if dialect.name != "postgresql":
        stmt = table.insert() if key is None else upsert(dialect.name, table, key, update or [], only_if_changed)
        db.execute(stmt, rows)
        return
    columns = list(rows[0])
    cache_key = ("insert", table, tuple(columns), tuple(key or ()), tuple(update or ()), only_if_changed)
    sql = _RECORDSET_SQL.get(cache_key)
    if sql is None:
        sql = _RECORDSET_SQL[cache_key] = _recordset_sql(dialect, table, columns, key, update, only_if_changed)
    db.connection().exec_driver_sql(sql, (_recordset_json(table, rows),))


def update_rows(db: Any, table: Any, rows: list[dict[str, Any]], key: str) -> None:
    """`UPDATE table SET <the rows' other columns> WHERE key = <the row's>` for many rows in one statement
    on PostgreSQL (`UPDATE ... FROM json_to_recordset`, see `insert_rows`); executemany on SQLite."""
    if not rows:
        return
    dialect = db.get_bind().dialect
    columns = list(rows[0])
    if dialect.name != "postgresql":
        from sqlalchemy import bindparam

        stmt = table.update().where(table.c[key] == bindparam(f"k_{key}"))
        stmt = stmt.values({c: bindparam(f"k_{c}") for c in columns if c != key})
        db.execute(stmt, [{f"k_{c}": v for c, v in row.items()} for row in rows])
        return
    cache_key = ("update", table, tuple(columns), key)
    sql = _RECORDSET_SQL.get(cache_key)
    if sql is None:
        quote = dialect.identifier_preparer.quote
        sets = ", ".join(f"{quote(c)} = u.{quote(c)}" for c in columns if c != key)
        sql = (f"UPDATE {dialect.identifier_preparer.format_table(table)} AS t SET {sets} "
               f"FROM json_to_recordset(%s::json) AS u({_column_types(dialect, table, columns)}) "
               f"WHERE t.{quote(key)} = u.{quote(key)}")
        _RECORDSET_SQL[cache_key] = sql
    db.connection().exec_driver_sql(sql, (_recordset_json(table, rows),))


def _recordset_json(table: Any, rows: list[dict[str, Any]]) -> str:
    """The rows as one JSON array for `json_to_recordset`, by orjson: the stdlib encoder (and its Python
    callback per datetime) was 14 % of an intake's GIL time under a Frigate burst; orjson is ~12x faster here.
    Naive datetimes in the table's timestamp columns are refused, as the ORM's column type refuses them.
    orjson writes NaN and infinities as null: the events these rows come from refuse them
    (`models.events`), and a NOT NULL column refuses the null."""
    for name in _aware_columns(table, tuple(rows[0])):
        for row in rows:
            value = row[name]
            if isinstance(value, datetime) and value.tzinfo is None:
                raise ValueError("naive datetime refused: pass an aware UTC datetime")
    return orjson.dumps(rows, default=_json_value).decode()


_AWARE: dict[tuple[Any, tuple[str, ...]], tuple[str, ...]] = {}


def _aware_columns(table: Any, columns: tuple[str, ...]) -> tuple[str, ...]:
    """Which of `columns` are `UTCDateTime` columns of `table` (cached)."""
    key = (table, columns)
    found = _AWARE.get(key)
    if found is None:
        from models.base import UTCDateTime

        found = _AWARE[key] = tuple(c for c in columns if isinstance(table.c[c].type, UTCDateTime))
    return found


def _json_value(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} cannot be stored by insert_rows")


def _column_types(dialect: Any, table: Any, columns: list[str]) -> str:
    """`name type, ...` of a recordset's columns, as the table declares them."""
    from sqlalchemy import TypeDecorator

    from models.base import UTCDateTime

    quote = dialect.identifier_preparer.quote
    types = []
    for name in columns:
        typ = table.c[name].type
        own = isinstance(typ, TypeDecorator) and type(typ).process_bind_param is not TypeDecorator.process_bind_param
        if own and not isinstance(typ, UTCDateTime):  # its conversion would be bypassed (UTC's is in _json_value)
            raise TypeError(f"insert_rows cannot store column {name} of type {type(typ).__name__}")
        types.append(f"{quote(name)} {typ.compile(dialect=dialect)}")
    return ", ".join(types)


def _recordset_sql(dialect: Any, table: Any, columns: list[str], key: list[str] | None,
                   update: list[str] | None, only_if_changed: str | None) -> str:
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(n) for n in columns)
    target = dialect.identifier_preparer.format_table(table)
    sql = (f"INSERT INTO {target} ({names}) "
           f"SELECT {names} FROM json_to_recordset(%s::json) AS u({_column_types(dialect, table, columns)})")
    if key:
        sets = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in update or [])
        action = f"DO UPDATE SET {sets}" if sets else "DO NOTHING"
        if sets and only_if_changed:
            action += f" WHERE {target}.{quote(only_if_changed)} <> EXCLUDED.{quote(only_if_changed)}"
        sql += f" ON CONFLICT ({', '.join(quote(k) for k in key)}) {action}"
    return sql
