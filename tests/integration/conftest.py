"""Fixtures starting real services (PostgreSQL, an MLflow server on it) once per module; see services.py."""

from __future__ import annotations

import pytest

from tests.integration import services


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on a free loopback port."""
    with services.postgres_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """An MLflow tracking server with a PostgreSQL backend store and a file artifact root."""
    import mlflow
    from mlflow.tracking._tracking_service.utils import is_tracking_uri_set

    previous = mlflow.get_tracking_uri() if is_tracking_uri_set() else None
    backend = postgres.create_database("mlflow")
    try:
        with services.mlflow_server(backend, tmp_path_factory.mktemp("mlflow-server")) as server:
            yield server
    finally:
        mlflow.set_tracking_uri(previous)  # later tests must not log to a server that is gone
