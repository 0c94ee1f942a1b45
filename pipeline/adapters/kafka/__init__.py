"""Kafka adapters: topics, producers/consumers (kafka-python), the embedded broker, worker processes."""
