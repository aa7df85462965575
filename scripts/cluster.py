"""A real multi-node cluster on loopback: PostgreSQL, an MLflow tracking server, a Ray head and a Ray worker.

    python scripts/cluster.py up   [--dir DIR] [--head-cpus 1] [--worker-cpus 2] [--worker-gpus 0]
    python scripts/cluster.py env  [--dir DIR]     # `export ...` lines for a client (make submit sources them)
    python scripts/cluster.py down [--dir DIR]

Everything listens on 127.0.0.1 on free ports chosen at start. Ray runs with token authentication; MLflow
with basic auth, its runs in PostgreSQL, its artifacts proxied (clients need nothing but HTTP). Secrets
are generated at the first ``up`` and kept in DIR (mode 0600), never in the repository; an ``up`` after a
``down`` in the same DIR finds the runs and models of before (``rm -rf DIR`` forgets everything).
``down`` stops exactly what
``up`` started: the process groups it recorded and the PostgreSQL of its own data directory (never
``ray stop``, which would stop every Ray on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HOST = "127.0.0.1"
DEFAULT_DIR = Path(tempfile.gettempdir()) / f"tunelab-cluster-{getpass.getuser()}"
PG_USER = "postgres"  # the system user that runs PostgreSQL when we are root (initdb refuses root)
DB_ROLE, DB_NAME, AUTH_DB_NAME = "mlflow", "mlflow", "mlflow_auth"
ADMIN = "admin"
#: the MLflow user Ray jobs log as: not an admin (it cannot manage users or others' permissions); it creates the
#: experiments and registered models it writes, and so manages those (the server's default for others: READ)
JOBS_USER = "tunelab-jobs"
OBJECT_STORE_BYTES = 256 * 1024**2  # per node; Ray's default (30% of RAM) is far more than tests need
READY_TIMEOUT_S = 240.0  # a loaded 2-core machine takes minutes to start a node
#: MLflow checks a password with PBKDF2 on every request (~0.5 s on a busy 2-core box) unless it caches the
#: check; with one server worker a changed password applies at once, with several within this many seconds
AUTH_CACHE_TTL_S = 60
POLL_S = 0.5
LOG_TAIL_LINES = 30
NODE_START_ATTEMPTS = 2
STOP_GRACE_S = 15.0
#: ports each Ray node binds besides the worker ports (left to the OS: --min/max-worker-port 0)
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port")
NODE_PORTS = (
    "node-manager-port",
    "object-manager-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "runtime-env-agent-port",
    "metrics-export-port",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    if shutil.which(name):
        return name
    sys.exit(f"error: PostgreSQL's {name} not found (run `make sysdeps` or apt-get install postgresql)")


def _as_pg_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *cmd] if os.geteuid() == 0 else cmd


class Cluster:
    """The state of one loopback cluster, kept in ``DIR/state.json``."""

    def __init__(self, root: Path):
        _refuse_unless_ours(root.absolute())  # before anything in it is read
        self.root = root.resolve()
        self.state_file, self.env_file = self.root / "state.json", self.root / "env"
        self.secrets_file = self.root / "secrets.json"
        self.state: dict = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    # --- up ------------------------------------------------------------------------------
    def up(self, head_cpus: int, worker_cpus: int, worker_gpus: int) -> None:
        if self.state.get("processes"):
            sys.exit(f"error: {self.root}: a cluster is already up here (`cluster.py down --dir {self.root}` first)")
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _refuse_unless_ours(self.root)
        self.root.chmod(0o711)  # PostgreSQL's user must reach its data directory inside; nothing here is listable
        self.state = {"processes": {}, "dir": str(self.root)}
        secret = self._secrets()
        try:
            self._postgres(secret["db_password"])
            self._mlflow(secret)
            self._ray(secret, head_cpus, worker_cpus, worker_gpus)
        except BaseException:
            self.down()
            raise
        self._write_client_env(secret)
        print(
            f"cluster up: Ray dashboard/jobs {self.state['dashboard']}, MLflow {self.state['mlflow']}\n"
            f"client settings (secrets, mode 0600): {self.env_file}"
        )

    def _secrets(self) -> dict:
        """Generated at the first ``up`` and kept (mode 0600) so that a cluster started again finds its runs."""
        if self.secrets_file.exists():
            _refuse_unless_ours(self.secrets_file, private=True)
            return json.loads(self.secrets_file.read_text())
        secret = {
            "ray_token": secrets.token_hex(32),
            "db_password": secrets.token_urlsafe(24),
            "admin_password": secrets.token_urlsafe(24),
            "jobs_password": secrets.token_urlsafe(24),
            "flask_key": secrets.token_hex(32),
        }
        _write_private(self.secrets_file, json.dumps(secret))
        return secret

    def _postgres(self, password: str) -> None:
        data, port = self.root / "pg", free_port()
        fresh = not (data / "PG_VERSION").exists()  # else: the runs of an earlier `up` in this directory
        if fresh:
            data.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(data, PG_USER, PG_USER)
            subprocess.run(
                _as_pg_user(
                    [
                        _pg_bin("initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "postgres",
                        "--auth-local=trust",
                        "--auth-host=scram-sha-256",
                        "-E",
                        "UTF8",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        self.state["processes"]["postgres"] = {"data": str(data)}
        self.save()
        subprocess.run(
            _as_pg_user(
                [
                    _pg_bin("pg_ctl"),
                    "-D",
                    str(data),
                    "-l",
                    str(data / "server.log"),
                    "-w",
                    "-o",
                    f"-k {data} -p {port} -h {HOST}",
                    "start",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        import psycopg2  # the server side of MLflow needs it anyway

        conn = psycopg2.connect(host=str(data), port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            if fresh:
                cur.execute(f"CREATE ROLE {DB_ROLE} LOGIN PASSWORD %s", (password,))
                for db in (DB_NAME, AUTH_DB_NAME):
                    cur.execute(f"CREATE DATABASE {db} OWNER {DB_ROLE}")
        conn.close()
        self.state["postgres_port"] = port
        self.save()

    def _mlflow(self, secret: dict) -> None:
        port, pg = free_port(), self.state["postgres_port"]
        db = f"postgresql+psycopg2://{DB_ROLE}@{HOST}:{pg}"  # the password travels as PGPASSWORD, not in argv
        auth_ini = self.root / "basic_auth.ini"
        auth_ini.write_text(
            f"[mlflow]\ndefault_permission = READ\ndatabase_uri = {db}/{AUTH_DB_NAME}\n"
            f"admin_username = {ADMIN}\nauthorization_function = "
            "mlflow.server.auth:authenticate_request_basic_auth\n"
            f"auth_cache_ttl_seconds = {AUTH_CACHE_TTL_S}\n"
        )
        env = {
            **os.environ,
            "PGPASSWORD": secret["db_password"],
            "MLFLOW_AUTH_CONFIG_PATH": str(auth_ini),
            "MLFLOW_AUTH_ADMIN_PASSWORD": secret["admin_password"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secret["flask_key"],
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }  # GenAI job workers: a dozen processes we never use
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--app-name",
            "basic-auth",
            "--backend-store-uri",
            f"{db}/{DB_NAME}",
            "--serve-artifacts",
            "--artifacts-destination",
            (self.root / "artifacts").as_uri(),
            "--host",
            HOST,
            "--port",
            str(port),
            "--workers",
            "1",
            "--allowed-hosts",
            f"{HOST}:{port},localhost:{port}",
        ]
        self._spawn("mlflow", cmd, env)
        self.state["mlflow"] = url = f"http://{HOST}:{port}"
        self.save()
        self._wait("MLflow server", "mlflow", lambda: requests.get(f"{url}/health", timeout=2).ok)
        self._jobs_user(url, secret)

    def _jobs_user(self, url: str, secret: dict) -> None:
        """The jobs' MLflow user, created by the admin (again on a cluster started again: its password is kept)."""
        secret.setdefault("jobs_password", secrets.token_urlsafe(24))  # state directories from before it existed
        _write_private(self.secrets_file, json.dumps(secret))
        admin = (ADMIN, secret["admin_password"])
        r = requests.post(
            f"{url}/api/2.0/mlflow/users/create",
            json={"username": JOBS_USER, "password": secret["jobs_password"]},
            auth=admin,
            timeout=30,
        )
        if r.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in r.text:
            r = requests.patch(
                f"{url}/api/2.0/mlflow/users/update-password",
                json={"username": JOBS_USER, "password": secret["jobs_password"]},
                auth=admin,
                timeout=30,
            )
        r.raise_for_status()

    def _ray(self, secret: dict, head_cpus: int, worker_cpus: int, worker_gpus: int) -> None:
        # Jobs inherit the nodes' environment: the tracking credentials live here, not in a job's runtime env.
        # Ray advertises the machine's address even when told 127.0.0.1 and binds its internal gRPC ports on
        # every interface (no option says otherwise): the token keeps them closed; the dashboard is on loopback.
        token = secret["ray_token"]
        env = {
            **os.environ,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token,
            "MLFLOW_TRACKING_USERNAME": JOBS_USER,
            "MLFLOW_TRACKING_PASSWORD": secret["jobs_password"],
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("RAY_ADDRESS", None)
        ray = [
            sys.executable,
            "-m",
            "ray.scripts.scripts",
            "start",
            "--block",
            "--object-store-memory",
            str(OBJECT_STORE_BYTES),
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            "--disable-usage-stats",
        ]
        head_ports: dict[str, int] = {}

        def head() -> list[str]:
            head_ports.update({p: free_port() for p in (*HEAD_PORTS, *NODE_PORTS)})
            self.state["gcs"] = f"{HOST}:{head_ports['port']}"
            self.state["dashboard"] = f"http://{HOST}:{head_ports['dashboard-port']}"
            return [
                *ray,
                "--head",
                "--dashboard-host",
                HOST,
                "--num-cpus",
                str(head_cpus),
                "--num-gpus",
                "0",
                "--temp-dir",
                str(self.root / "ray-head"),
                *_flags(head_ports),
            ]

        def worker() -> list[str]:
            return [
                *ray,
                "--address",
                self.state["gcs"],
                "--num-cpus",
                str(worker_cpus),
                "--num-gpus",
                str(worker_gpus),
                "--temp-dir",
                str(self.root / "ray-worker"),
                *_flags({p: free_port() for p in NODE_PORTS}),
            ]

        self._start_node("head", head, env, lambda: _alive_nodes(self.state["dashboard"], token) >= 1)
        self._start_node("worker", worker, env, lambda: _alive_nodes(self.state["dashboard"], token) >= 2)

    def _start_node(self, name: str, command, env: dict, ready) -> None:
        """Start a Ray node; once more on fresh ports if it dies starting (a port taken since we chose it)."""
        for attempt in range(1, NODE_START_ATTEMPTS + 1):
            self._spawn(name, command(), env)
            try:
                self._wait(f"Ray {name} node", name, ready)
                return
            except RuntimeError as e:
                _stop_groups([self.state["processes"].pop(name)["pgid"]])
                if attempt == NODE_START_ATTEMPTS:
                    raise
                print(f"retrying: {e}", file=sys.stderr, flush=True)

    def _spawn(self, name: str, cmd: list[str], env: dict) -> None:
        """Start ``cmd`` in a process group of its own, recorded for ``down``; its output goes to DIR/NAME.log."""
        with open(self.root / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        self.state["processes"][name] = {"pid": proc.pid, "pgid": proc.pid}
        self.save()

    def _wait(self, what: str, name: str, ready) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pid = self.state["processes"][name]["pid"]
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.RequestException):
                if ready():
                    return
            if not _running(pid):
                raise RuntimeError(f"{what} exited while starting; {self._tail(name)}")
            time.sleep(POLL_S)
        raise RuntimeError(f"{what} not ready after {READY_TIMEOUT_S:.0f} s; {self._tail(name)}")

    def _tail(self, name: str) -> str:
        log = self.root / f"{name}.log"
        lines = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log.exists() else []
        return f"the end of {log}:\n" + "\n".join(lines)

    def _write_client_env(self, secret: dict) -> None:
        client = {
            "RAY_ADDRESS": self.state["dashboard"],
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secret["ray_token"],
            "MLFLOW_TRACKING_URI": self.state["mlflow"],
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": secret["admin_password"],
        }
        _write_private(self.env_file, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in client.items()))

    # --- down ----------------------------------------------------------------------------
    def down(self) -> None:
        procs = self.state.get("processes", {})
        _stop_groups([procs[name]["pgid"] for name in ("worker", "head", "mlflow") if name in procs])
        if "postgres" in procs:
            data = procs["postgres"]["data"]
            if (Path(data) / "postmaster.pid").exists():
                subprocess.run(
                    _as_pg_user([_pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"]),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
        self.state["processes"] = {}
        if self.root.exists():
            self.save()
        with contextlib.suppress(FileNotFoundError):
            self.env_file.unlink()  # no cluster, no client settings: `make submit` says so


def _refuse_unless_ours(path: Path, private: bool = False) -> None:
    """``path``, where it exists, must be this user's own: not a link, owned by this user, writable by no one else
    (``private``: readable by no one else). A directory in /tmp that someone else made first could hold a state or
    secrets of their choosing."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    why = None
    if stat.S_ISLNK(st.st_mode):
        why = "is a symbolic link"
    elif st.st_uid != os.geteuid():
        why = f"belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    elif st.st_mode & (0o077 if private else 0o022):
        why = f"is open to other users (mode {stat.S_IMODE(st.st_mode):o})"
    if why:
        sys.exit(f"error: {path} {why}: not trusted with the cluster's state and secrets (choose another --dir)")


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _flags(ports: dict[str, int]) -> list[str]:
    return [arg for name, port in ports.items() for arg in (f"--{name}", str(port))]


def _alive_nodes(dashboard: str, token: str) -> int:
    r = requests.get(
        f"{dashboard}/api/v0/nodes",
        params={"limit": 100, "detail": "false"},
        timeout=5,
        headers={"Authorization": f"Bearer {token}"},
    )
    if not r.ok:
        return 0
    return sum(1 for n in r.json()["data"]["result"]["result"] if n["state"] == "ALIVE")


def _running(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (down from another process): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return waited == 0


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pgid, os.WNOHANG)  # reap our own child, or the group would never look empty
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_groups(pgids: list[int], sig: int = signal.SIGTERM) -> None:
    """Signal the process groups, SIGKILL what is left of them after a grace period."""
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(_group_alive(g) for g in pgids):
        time.sleep(POLL_S)
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("up", "down", "env"))
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("TUNELAB_CLUSTER_DIR", DEFAULT_DIR)),
        help=f"where the cluster keeps its state, data and logs (default {DEFAULT_DIR})",
    )
    parser.add_argument("--head-cpus", type=int, default=1)
    parser.add_argument("--worker-cpus", type=int, default=2)
    parser.add_argument("--worker-gpus", type=int, default=0, help="GPUs the worker declares (logical on a CPU box)")
    args = parser.parse_args(argv)
    cluster = Cluster(args.dir)
    if args.command == "up":
        cluster.up(args.head_cpus, args.worker_cpus, args.worker_gpus)
    elif args.command == "down":
        cluster.down()
    elif not cluster.env_file.exists():
        print(f"error: no cluster is up in {cluster.root} (make cluster-up)", file=sys.stderr)
        return 2
    else:
        sys.stdout.write(cluster.env_file.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
