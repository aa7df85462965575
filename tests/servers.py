"""Real servers that tests start on loopback, and always stop: a free port, `mlflow server`, `mlflow models serve`."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

#: `mlflow server` takes 20-30 s to come up on a busy 2-core machine
SERVER_START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TrackingServer:
    """A real `mlflow server` on loopback over ``store`` (default: its own sqlite file in ``tmp``).

    It can be stopped and started again on the same store; ``stop`` ends its whole process group
    (uvicorn and its workers), and only that.
    """

    #: with ``auth``: MLflow's basic-auth app, its users in a sqlite file of its own, its admin this user
    ADMIN = "admin"

    def __init__(self, tmp: Path, store: str | None = None, auth: bool = False):
        self.tmp, self.port, self.auth = tmp, free_port(), auth
        self.admin_password = secrets.token_urlsafe(16)  # made here, for this server only
        self.store = store or f"sqlite:///{tmp}/server.db"
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"mlflow-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def _auth_env(self) -> dict[str, str]:
        ini = self.tmp / "basic_auth.ini"
        ini.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{self.tmp}/auth.db\n"
            f"admin_username = {self.ADMIN}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        )
        return {
            "MLFLOW_AUTH_CONFIG_PATH": str(ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": self.admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
        }

    def admin(self, method: str, path: str, body: dict | None) -> dict:
        """A call to the server's REST API as its admin (users, permissions)."""
        import base64

        token = base64.b64encode(f"{self.ADMIN}:{self.admin_password}".encode()).decode()
        request = urllib.request.Request(
            f"{self.uri}{path}",
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
        )
        with urllib.request.urlopen(request, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job workers: less load
        if self.auth:
            env.update(self._auth_env())
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlflow",
                    "server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--backend-store-uri",
                    self.store,
                    "--artifacts-destination",
                    str(self.tmp / "artifacts"),
                    "--workers",
                    "1",
                    *(["--app-name", "basic-auth"] if self.auth else []),
                ],
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.time() + SERVER_START_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"mlflow server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise AssertionError(
            f"mlflow server did not start in {SERVER_START_TIMEOUT_S} s:\n{self.log.read_text()[-3000:]}"
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):  # the group may outlive its leader, or be gone
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class ModelServer:
    """MLflow's own `mlflow models serve` for ``model_uri`` on loopback (``--env-manager local``), always stopped."""

    def __init__(self, tmp: Path, model_uri: str, tracking_uri: str):
        self.tmp, self.model_uri, self.tracking_uri, self.port = tmp, model_uri, tracking_uri, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"mlflow-models-serve-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "ModelServer":
        bin_dir = Path(sys.executable).parent
        command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", self.model_uri, "--env-manager", "local"]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*command, "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
                cwd=self.tmp,
                stdout=log,
                stderr=subprocess.STDOUT,
                # it starts `uvicorn` by name: the venv's bin first, as in a shell where the venv is active
                env={**os.environ, "MLFLOW_TRACKING_URI": self.tracking_uri, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                start_new_session=True,
            )
        deadline = time.time() + SERVER_START_TIMEOUT_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mlflow models serve exited with {self.proc.returncode}:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.__exit__()
        raise AssertionError(f"mlflow models serve did not start in {SERVER_START_TIMEOUT_S} s:\n{self._tail()}")

    def invoke(self, payload: dict) -> tuple[int, dict]:
        """POST ``payload`` (JSON) to /invocations: the HTTP status and the decoded answer."""
        request = urllib.request.Request(
            f"{self.url}/invocations",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def _tail(self) -> str:
        return self.log.read_text()[-3000:]

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
