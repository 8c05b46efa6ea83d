"""compress.tune_study: storage URLs are shown without their password."""

from __future__ import annotations

from compress.tune_study import masked_url


def test_storage_urls_hide_passwords():
    shown = masked_url("postgresql+psycopg2://tuner:s3cret@db.example:5432/optuna")
    assert "s3cret" not in shown and shown.startswith("postgresql+psycopg2://tuner:") and "db.example" in shown
    assert masked_url("sqlite:///runs/tune.db") == "sqlite:///runs/tune.db"
