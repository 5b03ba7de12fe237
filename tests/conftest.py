"""Shared fixtures: a real ``mlflow server`` process on 127.0.0.1, started once per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sweep._mlflow._server import free_port, running_mlflow_server

__all__ = ["free_port", "running_mlflow_server"]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URI of a real ``mlflow server`` on 127.0.0.1, shared by the session.

    Tests share it: use a unique experiment or sweep name per test.
    """
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri
