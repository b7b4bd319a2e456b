"""The team's tracking server: MLflow on a real PostgreSQL, both started into a folder of the checkout.

    python -m distill.tracking_server start [--dir .server] [--host 127.0.0.1] [--port 5001] [--artifacts URI]
    python -m distill.tracking_server stop  [--dir .server]
    python -m distill.tracking_server status [--dir .server]

(``make server`` / ``make server-stop`` call these; the tests call the same.)

Layout of ``--dir`` (nothing outside it is changed, except where noted for root):
- ``pg/``: the PostgreSQL cluster (``initdb``); PostgreSQL listens on no TCP port, only on a Unix
  socket inside ``pg/`` that only its owner (and root) may open, with ``trust`` auth for that socket.
  The MLflow server is the one client; everyone else talks to MLflow over HTTP.
- ``postgres.log``: PostgreSQL's own output (initdb, start, stop).
- ``artifacts/``: the proxied artifact store (``--serve-artifacts``: clients upload through the
  server, so they need no access to this folder); ``--artifacts s3://bucket/prefix`` puts them in
  an S3-compatible bucket instead (``MLFLOW_S3_ENDPOINT_URL`` and ``AWS_*`` credentials in the
  environment, and ``pip install boto3``).
- ``mlflow.log``, ``server.json`` (url, pid, backend): the MLflow server's output and its state.

PostgreSQL is Debian's ``postgresql`` package (``apt-get install -y postgresql``; binaries in
``/usr/lib/postgresql/<version>/bin``), or any other install whose ``bin`` folder ``PG_BIN`` names.
Its server refuses to run as root, so as root the cluster belongs to the ``postgres`` user (which
the package creates; ``PG_USER`` names another) and its commands run through ``runuser``. When that
user cannot reach ``--dir`` (a checkout under a private home folder), the cluster goes to
``$TMPDIR/distill-pg-<hash of --dir>`` and ``pg`` is a link to it.

The MLflow server runs with one worker and without its job runner
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``): about 0.5 GB instead of 2.4 GB (STYLE.md).
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from distill.files import atomic_write_text, read_json

DATABASE = "mlflow"
DB_USER = "mlflow"
START_TIMEOUT = 240.0  # seconds for MLflow's first start, which creates its ~50 tables in PostgreSQL
HEALTH_TIMEOUT = 5.0


class ServerError(RuntimeError):
    """The server cannot start or stop; the message says what to fix (and which log to read)."""


# --- PostgreSQL -------------------------------------------------------------------------------

def pg_bin() -> Path:
    """The folder of PostgreSQL's server binaries (initdb, pg_ctl)."""
    if os.environ.get("PG_BIN"):
        path = Path(os.environ["PG_BIN"])
        if not (path / "pg_ctl").exists():
            raise ServerError(f"PG_BIN={path} has no pg_ctl: point PG_BIN at PostgreSQL's bin folder")
        return path
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3])
                   if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    raise ServerError("PostgreSQL's server is not installed: apt-get install -y postgresql (Debian/Ubuntu), "
                      "or set PG_BIN to the bin folder of another install")


def _pg_user() -> str | None:
    """The user PostgreSQL runs as: None for the current (non-root) user, else PG_USER or postgres."""
    if os.geteuid() != 0:
        return None
    user = os.environ.get("PG_USER", "postgres")
    try:
        import pwd

        pwd.getpwnam(user)
    except KeyError:
        raise ServerError(f"running as root, PostgreSQL needs an unprivileged user and {user!r} does not exist: "
                          "install Debian's postgresql package (it creates 'postgres') or set PG_USER") from None
    return user


def _as_user(user: str | None, cmd: list[str]) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


def _cluster_dir(server_dir: Path, user: str | None) -> Path:
    """``<dir>/pg``, or (root, with a --dir the PostgreSQL user cannot reach) a private folder in TMPDIR."""
    link = server_dir / "pg"
    if link.is_symlink():
        return Path(os.readlink(link))
    if user is None:
        return link
    import pwd

    entry = pwd.getpwnam(user)
    link.mkdir(exist_ok=True)
    os.chown(link, entry.pw_uid, entry.pw_gid)
    os.chmod(link, 0o700)
    if subprocess.run(_as_user(user, ["test", "-w", str(link)]), capture_output=True).returncode == 0:
        return link
    link.rmdir()
    private = Path(tempfile.gettempdir()) / f"distill-pg-{hashlib.sha256(str(server_dir).encode()).hexdigest()[:12]}"
    private.mkdir(mode=0o700, exist_ok=True)
    os.chown(private, entry.pw_uid, entry.pw_gid)
    link.symlink_to(private)
    return private


def _run_logged(cmd: list[str], log: Path, what: str) -> None:
    with log.open("ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise ServerError(f"{what} failed (exit {done.returncode}): see {log}")


def start_postgres(server_dir: Path) -> Path:
    """Initialise (first time) and start the cluster; returns its socket folder. Idempotent."""
    server_dir = server_dir.resolve()
    server_dir.mkdir(parents=True, exist_ok=True)
    bin_dir, user = pg_bin(), _pg_user()
    data = _cluster_dir(server_dir, user)
    log = server_dir / "postgres.log"
    if not (data / "PG_VERSION").exists():
        _run_logged(_as_user(user, [str(bin_dir / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust",
                                    "-E", "UTF8", "--locale=C"]), log, "PostgreSQL initdb")
        conf = ("\n# distill.tracking_server: a Unix socket in the cluster folder, no TCP, small memory\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{data}'\n"
                "unix_socket_permissions = 0700\n"
                "shared_buffers = 32MB\n"
                "max_connections = 40\n")
        with (data / "postgresql.conf").open("a") as fh:
            fh.write(conf)
    status = subprocess.run(_as_user(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "status"]),
                            capture_output=True)
    if status.returncode != 0:
        # pg_ctl without -l: the server's output goes to our log file, which we (root or not) opened
        _run_logged(_as_user(user, [str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-t", "60", "start"]),
                    log, "PostgreSQL start")
    exists = subprocess.run(_as_user(user, [str(bin_dir / "psql"), "-h", str(data), "-U", DB_USER, "-d", "postgres",
                                            "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"]),
                            capture_output=True, text=True)
    if exists.returncode != 0:
        raise ServerError(f"PostgreSQL started but does not answer on {data}: see {log}")
    if exists.stdout.strip() != "1":
        _run_logged(_as_user(user, [str(bin_dir / "createdb"), "-h", str(data), "-U", DB_USER, DATABASE]), log,
                    "PostgreSQL createdb")
    return data


def stop_postgres(server_dir: Path) -> bool:
    server_dir = server_dir.resolve()
    link = server_dir / "pg"
    if not link.exists():
        return False
    data = Path(os.readlink(link)) if link.is_symlink() else link
    if not (data / "postmaster.pid").exists():
        return False
    user = _pg_user()
    _run_logged(_as_user(user, [str(pg_bin() / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"]),
                server_dir / "postgres.log", "PostgreSQL stop")
    return True


def backend_uri(socket_dir: Path) -> str:
    return f"postgresql+psycopg2://{DB_USER}@/{DATABASE}?host={socket_dir}"


# --- MLflow -----------------------------------------------------------------------------------

def health(url: str, timeout: float = HEALTH_TIMEOUT) -> str | None:
    """None when ``url``/health answers OK, else why not (one short phrase)."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/health", timeout=timeout) as response:
            return None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return str(reason) or type(exc).__name__


def _state_path(server_dir: Path) -> Path:
    return server_dir / "server.json"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (our own child that has exited) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return True


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host if host not in ("0.0.0.0", "") else "127.0.0.1", port)) == 0


def _artifacts(server_dir: Path, artifacts: str | None) -> str:
    if not artifacts:
        path = server_dir / "artifacts"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)
    if artifacts.startswith("s3://"):
        try:
            import boto3  # noqa: F401
        except ImportError:
            raise ServerError(f"artifacts in {artifacts} need boto3: .venv/bin/pip install boto3 "
                              "(and MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)") from None
    return artifacts


def start(server_dir: Path, host: str = "127.0.0.1", port: int = 5001, artifacts: str | None = None,
          timeout: float = START_TIMEOUT, extra: list[str] | None = None) -> dict:
    """Start PostgreSQL and the MLflow server (or find them running); returns the state (``url``, ``pid``).
    ``extra``: more ``mlflow server`` options, e.g. ``["--allowed-hosts", "mlflow.lab.example"]``."""
    server_dir = Path(server_dir).resolve()
    server_dir.mkdir(parents=True, exist_ok=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    state_path = _state_path(server_dir)
    if state_path.exists():
        state = read_json(state_path)
        if _alive(state["pid"]) and health(state["url"]) is None:
            state["already_running"] = True
            return state
    if _port_taken(host, port):
        raise ServerError(f"port {port} on {host} is already in use by another program: "
                          f"choose another, e.g. make server SERVER_PORT={port + 1}")
    socket_dir = start_postgres(server_dir)
    destination = _artifacts(server_dir, artifacts)
    mlflow = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "server", "--backend-store-uri", backend_uri(socket_dir),
           "--artifacts-destination", destination, "--serve-artifacts", "--host", host, "--port", str(port),
           "--workers", "1", *(extra or [])]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}
    log = server_dir / "mlflow.log"
    with log.open("ab") as fh:
        fh.write(f"\n$ {' '.join(cmd)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True)  # its own process group: stop ends its workers too
    state = {"url": url, "pid": proc.pid, "host": host, "port": port, "backend": backend_uri(socket_dir),
             "artifacts": destination, "log": str(log), "started": time.time()}
    atomic_write_text(state_path, json.dumps(state, indent=1))
    deadline = time.monotonic() + timeout
    why = "no answer yet"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the MLflow server exited with status {proc.returncode} while starting: see {log}")
        why = health(url, timeout=2.0)
        if why is None:
            return state
        time.sleep(0.5)
    stop(server_dir, postgres=False)
    raise ServerError(f"the MLflow server did not answer {url}/health within {timeout:.0f} s ({why}): see {log}")


def stop(server_dir: Path, postgres: bool = True) -> list[str]:
    """Stop the MLflow server (its whole process group) and PostgreSQL; returns what was stopped."""
    server_dir = Path(server_dir).resolve()
    stopped = []
    state_path = _state_path(server_dir)
    if state_path.exists():
        pid = read_json(state_path)["pid"]
        if _alive(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + 20
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            stopped.append(f"mlflow server (pid {pid})")
        state_path.unlink()
    if postgres and stop_postgres(server_dir):
        stopped.append("postgresql")
    return stopped


def check_tracking_uri(uri: str) -> None:
    """Fail fast, in one line, when an http(s) tracking URI does not answer ``/health``."""
    if not uri.startswith(("http://", "https://")):
        return
    why = health(uri)
    if why is not None:
        from distill.errors import ConfigError

        raise ConfigError(f"the tracking server MLFLOW_TRACKING_URI={uri} does not answer {uri.rstrip('/')}/health "
                          f"({why}): start it (make server) or point MLFLOW_TRACKING_URI at a running one")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m distill.tracking_server", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["start", "stop", "status"])
    parser.add_argument("--dir", default=".server", help="folder for the database, artifacts and logs")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for a team network)")
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--artifacts", default="", help="artifact store: default <dir>/artifacts; s3://bucket/prefix")
    parser.epilog = "After --: more `mlflow server` options, e.g. -- --allowed-hosts mlflow.lab.example"
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    server_dir = Path(args.dir)
    try:
        if args.action == "start":
            state = start(server_dir, args.host, args.port, args.artifacts or None, extra=extra)
            note = " (already running)" if state.get("already_running") else ""
            print(f"MLflow tracking server on PostgreSQL at {state['url']}{note}; logs in {server_dir}/\n"
                  f"  export MLFLOW_TRACKING_URI={state['url']}")
        elif args.action == "stop":
            stopped = stop(server_dir)
            print("stopped " + ", ".join(stopped) if stopped else f"nothing was running in {server_dir}/")
        else:
            state_path = _state_path(server_dir.resolve())
            if not state_path.exists():
                print(f"not running ({server_dir}/server.json absent)")
                return 1
            state = read_json(state_path)
            why = health(state["url"])
            print(f"{state['url']}: {'healthy' if why is None else why}")
            return 0 if why is None else 1
    except ServerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
