"""The MLflow client: short HTTP retries, a reachability check, one exception for "unavailable"."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from requests.exceptions import RequestException

from core import ConfigError
from core import store as st

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
HEALTH_TIMEOUT_S = 5.0
# A dead server should fail a call in seconds, not after MLflow's default 7 retries with
# exponential backoff (minutes). The store holds everything, so a later sync catches up.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
                 # set_terminated would otherwise print two links per run and fetch the run again
                 "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
                 "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # fmt: skip

F = TypeVar("F", bound=Callable[..., Any])


class TrackingUnavailable(Exception):
    """The tracking server or store cannot be reached, or wrote nothing. The store is intact."""


def check_reachable(tracking_uri: str) -> None:
    """GET <uri>/health for an http(s) URI; any HTTP answer counts, no answer raises quickly."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return  # it answered: a proxy without /health is still a server
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingUnavailable(
            f"MLflow server {tracking_uri} is unreachable ({reason})"
        ) from None


@contextlib.contextmanager
def guarded(tracking_uri: str) -> Iterator[None]:
    """Check the server first, and map MLflow/HTTP/file errors to :class:`TrackingUnavailable`."""
    check_reachable(tracking_uri)
    try:
        yield
    except (MlflowException, RequestException, OSError) as err:
        text = str(err).strip()
        first = text.splitlines()[0] if text else type(err).__name__
        raise TrackingUnavailable(f"MLflow at {tracking_uri}: {first[:300]}") from err


def tracked(method: F) -> F:
    """Run a method of an object with a ``tracking_uri`` under :func:`guarded`."""

    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with guarded(self.tracking_uri):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def make_client(tracking_uri: str) -> MlflowClient:
    """A client with short HTTP retries (unless the environment sets its own)."""
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # a new sqlite file would print "Creating initial MLflow database tables..." on every run of
    # a fresh store; its warnings and errors still show
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=tracking_uri)  # creates a sqlite file and its tables


def artifact_location(tracking_uri: str) -> str | None:
    """Next to a local sqlite file (``<dir>/mlartifacts``), not in the current directory;
    None for a server, which decides (``--default-artifact-root``)."""
    if not tracking_uri.startswith("sqlite:///") or "?" in tracking_uri:
        return None
    db = Path(tracking_uri[len("sqlite:///") :]).expanduser().resolve()
    return (db.parent / "mlartifacts").as_uri()


def quoted(value: str, field: str) -> str:
    """``value`` in single quotes for a search filter (quotes inside are refused)."""
    if "'" in value or "\\" in value:
        raise ConfigError(f"{field} = {value!r}: quotes and backslashes are not allowed")
    return f"'{value}'"


def file_hash(path: Path | st.StorePath) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
