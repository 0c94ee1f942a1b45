"""Versioned ClickHouse schema migrations: deploy/clickhouse/NNN_name.sql, applied in order.

Each file is one version (its name without `.sql`, e.g. `001_base_tables`). Statements are
separated by a `;` at the end of a line; every statement is written to be idempotent
(IF NOT EXISTS), so a migration interrupted half-way is simply applied again. Applied
versions are recorded in `schema_migrations`; `apply_migrations` skips them.
"""
from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from pathlib import Path

from clickhouse_connect.driver.client import Client

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "deploy" / "clickhouse"
_FILE = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_END_OF_STATEMENT = re.compile(r";[ \t]*(?:\r?\n|$)")

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations
(
    version    String,
    checksum   String,
    applied_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(applied_at)
ORDER BY version
"""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """The migration files in version order (NNN_name.sql only)."""
    return sorted(p for p in directory.iterdir() if _FILE.match(p.name))


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements; drop pieces that are only comments/blank."""
    out = []
    for chunk in _END_OF_STATEMENT.split(sql):
        code = "\n".join(line for line in chunk.splitlines() if not line.strip().startswith("--"))
        if code.strip():
            out.append(chunk.strip())
    return out


def applied_versions(client: Client) -> set[str]:
    client.command(SCHEMA_MIGRATIONS_DDL)
    return {row[0] for row in client.query("SELECT version FROM schema_migrations FINAL").result_rows}


def apply_migrations(client: Client, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not yet recorded, in order; return the versions applied now."""
    done = applied_versions(client)
    applied: list[str] = []
    for path in migration_files(directory):
        version = path.stem
        if version in done:
            continue
        sql = path.read_text(encoding="utf-8")
        for statement in split_statements(sql):
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[version, hashlib.sha256(sql.encode()).hexdigest(), datetime.now(timezone.utc)]],
            column_names=["version", "checksum", "applied_at"],
        )
        applied.append(version)
    return applied
