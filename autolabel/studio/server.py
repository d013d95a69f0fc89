"""A local Label Studio server for one workspace: start, stop, status, credentials.

Where the server comes from (first match wins):

1. ``$AUTOLABEL_LABEL_STUDIO_BIN`` (a path to the ``label-studio`` executable),
2. ``<repo>/.venv-studio/bin/label-studio`` next to the ``autolabel`` package (``scripts/setup.sh``
   creates that separate environment because Label Studio pins a Django/opencv/numpy stack that
   does not mix with the ML stack; autolabel only talks to it over HTTP),
3. ``label-studio`` on ``PATH``.

Everything the server writes lives under ``Workspace.studio_dir``: its SQLite database and media
(``data/``), its config/cache dirs (``XDG_*`` and ``HOME`` point there), ``server.log``,
``server.json`` (pid, port, url) and ``credentials.json`` (mode 0600: admin email, password and the
API token; the only place the token is kept). The server binds 127.0.0.1, serves local files from
the image root's parent (a local storage limits access to the image root), and has analytics and version checks off. Unprefixed variables
Label Studio would also read (``PORT``, ``HOST``, ``USERNAME``, ``PASSWORD``, ``USER_TOKEN``, ...)
are removed from its environment. A busy port is refused up front instead of letting Label Studio
silently move to the next one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from autolabel.errors import AutolabelError

ADMIN_EMAIL = "admin@autolabel.local"
HOST = "127.0.0.1"
# Variables Label Studio reads with and without a LABEL_STUDIO_/HEARTEX_ prefix; none may leak in.
_SHADOWED_NAMES = (
    "PORT",
    "HOST",
    "USERNAME",
    "PASSWORD",
    "USER_TOKEN",
    "DEBUG",
    "LOG_LEVEL",
    "BASE_DATA_DIR",
    "DATABASE_NAME",
    "LOCAL_FILES_SERVING_ENABLED",
    "LOCAL_FILES_DOCUMENT_ROOT",
    "DISABLE_SIGNUP_WITHOUT_LINK",
    "COLLECT_ANALYTICS",
    "LATEST_VERSION_CHECK",
    "ENABLE_LEGACY_API_TOKEN",
    "SENTRY_DSN",
    "FRONTEND_SENTRY_DSN",
)


@dataclass(frozen=True)
class Credentials:
    email: str
    password: str
    token: str

    def __repr__(self) -> str:  # never print secrets, even by accident
        return f"Credentials(email={self.email!r}, password=***, token=***)"


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    healthy: bool
    url: str | None
    pid: int | None
    port: int | None


def find_label_studio_bin() -> str:
    explicit = os.environ.get("AUTOLABEL_LABEL_STUDIO_BIN")
    if explicit:
        if not Path(explicit).is_file():
            raise AutolabelError(f"AUTOLABEL_LABEL_STUDIO_BIN points to a missing file: {explicit}")
        return explicit
    repo_bin = Path(__file__).resolve().parents[2] / ".venv-studio" / "bin" / "label-studio"
    if repo_bin.is_file():
        return str(repo_bin)
    on_path = shutil.which("label-studio")
    if on_path:
        return on_path
    raise AutolabelError(
        "label-studio is not installed: run scripts/setup.sh (it creates .venv-studio) or set "
        "AUTOLABEL_LABEL_STUDIO_BIN, or point --url/LABEL_STUDIO_URL at your own server"
    )


def credentials_path(studio_dir: Path) -> Path:
    return Path(studio_dir) / "credentials.json"


def read_credentials(studio_dir: Path) -> Credentials | None:
    path = credentials_path(studio_dir)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Credentials(email=data["email"], password=data["password"], token=data["token"])


def ensure_credentials(studio_dir: Path) -> Credentials:
    """Create the admin credentials once (file mode 0600); later calls read them back."""
    existing = read_credentials(studio_dir)
    if existing is not None:
        return existing
    studio_dir = Path(studio_dir)
    studio_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    creds = Credentials(email=ADMIN_EMAIL, password=secrets.token_urlsafe(18), token=secrets.token_hex(20))
    fd = os.open(credentials_path(studio_dir), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"email": creds.email, "password": creds.password, "token": creds.token}, fh)
    return creds


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as the server uses it: a port in TIME_WAIT is free, a listening one is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def server_environment(
    studio_dir: Path, image_root: Path, creds: Credentials, base: dict | None = None
) -> dict:
    env = dict(os.environ if base is None else base)
    for name in _SHADOWED_NAMES:
        for prefix in ("", "LABEL_STUDIO_", "HEARTEX_"):
            env.pop(prefix + name, None)
    env.pop("LABEL_STUDIO_API_KEY", None)
    home = Path(studio_dir) / "home"
    env.update(
        {
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "data"),
            "XDG_CACHE_HOME": str(home / "cache"),
            "LABEL_STUDIO_BASE_DATA_DIR": str(Path(studio_dir) / "data"),
            "LABEL_STUDIO_USERNAME": creds.email,
            "LABEL_STUDIO_PASSWORD": creds.password,
            "LABEL_STUDIO_USER_TOKEN": creds.token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(document_root(image_root)),
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false",
            "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LABEL_STUDIO_LOG_LEVEL": "WARNING",
            "LOG_LEVEL": "WARNING",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def document_root(image_root: Path) -> Path:
    """Local files are served below the image root's parent: Label Studio refuses a local storage
    whose path equals the document root, and the storage (the image root) must lie inside it."""
    return Path(image_root).resolve().parent


def _state_path(studio_dir: Path) -> Path:
    return Path(studio_dir) / "server.json"


def _read_state(studio_dir: Path) -> dict | None:
    path = _state_path(studio_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    from autolabel.runtime import pid_alive

    return pid_alive(pid)


def healthy(url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        resp = httpx.get(f"{url.rstrip('/')}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return resp.status_code == 200


def status(studio_dir: Path) -> ServerStatus:
    state = _read_state(studio_dir)
    if not state:
        return ServerStatus(False, False, None, None, None)
    running = _pid_alive(int(state["pid"]))
    return ServerStatus(
        running=running,
        healthy=running and healthy(state["url"]),
        url=state["url"],
        pid=int(state["pid"]),
        port=int(state["port"]),
    )


def start(
    studio_dir: Path,
    image_root: Path,
    port: int,
    *,
    wait: bool = True,
    timeout: float = 180.0,
) -> ServerStatus:
    """Start the server in the background (idempotent: a healthy running server is returned as is)."""
    studio_dir = Path(studio_dir)
    current = status(studio_dir)
    if current.running:
        if wait:
            return _wait_healthy(studio_dir, current, timeout)
        return current
    if not port_is_free(port):
        raise AutolabelError(
            f"port {port} on {HOST} is already in use: stop what uses it or pass --port (studio.port in autolabel.yaml)"
        )
    binary = find_label_studio_bin()
    creds = ensure_credentials(studio_dir)
    for sub in ("data", "home/config", "home/data", "home/cache"):
        (studio_dir / sub).mkdir(parents=True, exist_ok=True)
    make_private(studio_dir)
    log_path = studio_dir / "server.log"
    command = [binary, "start", "--no-browser", "--internal-host", HOST, "--port", str(port)]
    command += ["--data-dir", str(studio_dir / "data"), "--log-level", "WARNING"]
    if not (studio_dir / "data" / "label_studio.sqlite3").exists():
        command.append("--enable-legacy-api-token")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=server_environment(studio_dir, image_root, creds),
            cwd=studio_dir,
            start_new_session=True,  # its own process group: stop() ends the server and its children
            umask=0o077,  # its database holds the API token: everything it writes is the owner's only
        )
    url = f"http://{HOST}:{port}"
    _state_path(studio_dir).write_text(json.dumps({"pid": proc.pid, "port": port, "url": url}))
    started = ServerStatus(running=True, healthy=False, url=url, pid=proc.pid, port=port)
    if not wait:
        return started
    return _wait_healthy(studio_dir, started, timeout)


def ensure_local(studio_dir: Path, image_root: Path, config, timeout: float = 180.0) -> ServerStatus | None:
    """Start the workspace's own server when none is configured (``studio.url``, LABEL_STUDIO_URL)
    or running; the started server's status, or None when nothing had to be started."""
    if os.environ.get("LABEL_STUDIO_URL") or config.url or status(studio_dir).running:
        return None
    return start(studio_dir, image_root, config.port, timeout=timeout)


def make_private(studio_dir: Path) -> None:
    """The server's folder readable by its owner only (0700 folders, 0600 files): Label Studio's
    SQLite database stores the API token in plain text, next to ``credentials.json``."""
    studio_dir = Path(studio_dir)
    if not studio_dir.exists():
        return
    os.chmod(studio_dir, 0o700)
    for root, dirs, files in os.walk(studio_dir):
        for name in dirs:
            path = Path(root) / name
            if not path.is_symlink():
                os.chmod(path, 0o700)
        for name in files:
            path = Path(root) / name
            if not path.is_symlink():
                os.chmod(path, 0o600)


def _wait_healthy(studio_dir: Path, current: ServerStatus, timeout: float) -> ServerStatus:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(current.pid):
            raise AutolabelError(f"Label Studio exited during start; see {Path(studio_dir) / 'server.log'}")
        if healthy(current.url):
            make_private(studio_dir)  # whatever it created before the umask applied (or an older workspace)
            return ServerStatus(True, True, current.url, current.pid, current.port)
        time.sleep(0.5)
    raise AutolabelError(
        f"Label Studio did not answer on {current.url} within {timeout:.0f} s; see {Path(studio_dir) / 'server.log'}"
    )


def stop(studio_dir: Path, timeout: float = 20.0) -> bool:
    """Stop the workspace's server (its whole process group); False when none was running."""
    state = _read_state(studio_dir)
    if not state:
        return False
    pid = int(state["pid"])
    was_running = _pid_alive(pid)
    if was_running:
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            _reap(pid)
            time.sleep(0.2)
        if _pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.5)
        _reap(pid)
        # The listening socket may outlive the main process by a moment (its worker children).
        port = int(state.get("port") or 0)
        while port and not port_is_free(port) and time.monotonic() < deadline + 5:
            time.sleep(0.2)
    _state_path(studio_dir).unlink(missing_ok=True)
    return was_running


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(os.getpgid(pid), sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def installed_version(binary: str) -> str | None:
    """The server's version from its package metadata (``label-studio --version`` would start a server)."""
    python = Path(binary).parent / "python"
    if not python.exists():
        python = Path(sys.executable)
    try:
        out = subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    except (subprocess.SubprocessError, OSError):
        return None
    return out.stdout.strip() or None
