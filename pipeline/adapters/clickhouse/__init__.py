"""ClickHouse adapter: rows, the sink, queries and migrations (the only user of clickhouse-connect)."""
