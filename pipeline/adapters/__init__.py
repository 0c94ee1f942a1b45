"""Adapters: the code that talks to the outside (Kafka, ClickHouse, metrics, child processes)
and the stored form of the core's state (state_codec)."""
