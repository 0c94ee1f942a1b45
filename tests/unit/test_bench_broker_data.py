"""`cxpulse bench` reports how much data the embedded broker holds when its paced phases start:
the broker's background CPU grows with it (bench/broker_storage_cost.py)."""
from __future__ import annotations

from pipeline.tools.bench import data_dir_mb


def test_the_brokers_data_is_the_size_of_the_files_under_its_directory(tmp_path):
    (tmp_path / "topics" / "cx.touchpoints").mkdir(parents=True)
    (tmp_path / "topics" / "cx.touchpoints" / "0.log").write_bytes(b"x" * 1_500_000)
    (tmp_path / "snapshot.json").write_bytes(b"y" * 250_000)
    assert data_dir_mb(tmp_path) == 1.8
    assert data_dir_mb(tmp_path / "nothing-here") == 0.0
