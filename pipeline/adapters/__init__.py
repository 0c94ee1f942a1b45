"""Adapters: the code that does I/O (Kafka, ClickHouse, metrics, child processes)."""
