"""Server lifecycle, credentials, tokens and the CLI against the session's real Label Studio."""

from __future__ import annotations

import os
import socket
import stat

import pytest
from typer.testing import CliRunner

from autolabel.cli.app import app
from autolabel.errors import AutolabelError
from autolabel.studio import server
from autolabel.studio.client import StudioClient
from tests.conftest_studio import make_workspace


def test_server_environment_drops_variables_label_studio_would_misread(tmp_path):
    parent = {
        "PATH": "/usr/bin",
        "PORT": "9999",
        "HOST": "0.0.0.0",
        "USERNAME": "me",
        "PASSWORD": "pw",
        "USER_TOKEN": "t0k",
        "LABEL_STUDIO_PORT": "1",
        "HEARTEX_HOST": "x",
        "LABEL_STUDIO_API_KEY": "k",
        "DEBUG": "1",
    }
    creds = server.Credentials(email="a@b.c", password="secret-pw", token="secret-token")
    env = server.server_environment(tmp_path / "studio", tmp_path / "images", creds, base=parent)
    for name in (
        "PORT",
        "HOST",
        "USERNAME",
        "PASSWORD",
        "USER_TOKEN",
        "LABEL_STUDIO_PORT",
        "HEARTEX_HOST",
        "LABEL_STUDIO_API_KEY",
        "DEBUG",
    ):
        assert name not in env, name
    assert env["PATH"] == "/usr/bin"
    assert env["LABEL_STUDIO_USERNAME"] == "a@b.c" and env["LABEL_STUDIO_USER_TOKEN"] == "secret-token"
    assert (
        env["LABEL_STUDIO_COLLECT_ANALYTICS"] == "false"
        and env["LABEL_STUDIO_LATEST_VERSION_CHECK"] == "false"
    )
    assert env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == str(tmp_path.resolve())
    for key in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "LABEL_STUDIO_BASE_DATA_DIR"):
        assert env[key].startswith(str(tmp_path / "studio")), key


def test_credentials_file_is_private_and_stable(tmp_path):
    first = server.ensure_credentials(tmp_path / "studio")
    mode = stat.S_IMODE(os.stat(server.credentials_path(tmp_path / "studio")).st_mode)
    assert mode == 0o600
    assert server.ensure_credentials(tmp_path / "studio") == first
    assert first.token not in repr(first) and first.password not in repr(first)
    assert len(first.token) >= 40


def test_busy_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as sock:
        sock.bind((server.HOST, 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(AutolabelError, match=f"port {port} .* already in use"):
            server.start(tmp_path / "studio", tmp_path / "images", port)
    assert not (tmp_path / "studio" / "server.json").exists()
    assert server.status(tmp_path / "studio").running is False


def test_missing_binary_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOLABEL_LABEL_STUDIO_BIN", str(tmp_path / "nope" / "label-studio"))
    with pytest.raises(AutolabelError, match="AUTOLABEL_LABEL_STUDIO_BIN"):
        server.find_label_studio_bin()


def test_unreachable_server_is_one_line(tmp_path, monkeypatch):
    port = server.free_port()
    sw_root = tmp_path / "ws"
    (tmp_path / "images").mkdir()
    runner = CliRunner()
    assert (
        runner.invoke(app, ["init", "--images", str(tmp_path / "images"), "-w", str(sw_root)]).exit_code == 0
    )
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-real-token-123")
    result = runner.invoke(app, ["pull", "-w", str(sw_root), "--url", f"http://127.0.0.1:{port}"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Label Studio")
    assert "not-a-real-token-123" not in result.output


@pytest.mark.studio
def test_wrong_token_is_one_line_without_the_token(studio_server, tmp_path, monkeypatch):
    sw = make_workspace(studio_server, tmp_path, 1)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "0123456789abcdef-wrong-token")
    result = CliRunner().invoke(app, ["push", "-w", str(sw.ws.root)])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "rejected the API token (401)" in lines[0]
    assert "wrong-token" not in result.output


@pytest.mark.studio
def test_personal_access_token_works(studio_server):
    import httpx

    creds = server.read_credentials(studio_server.studio_dir)
    with httpx.Client(base_url=studio_server.url, timeout=60) as web:
        web.get("/user/login/")
        web.post(
            "/user/login/",
            data={
                "email": creds.email,
                "password": creds.password,
                "csrfmiddlewaretoken": web.cookies["csrftoken"],
            },
            headers={"Referer": f"{studio_server.url}/user/login/"},
        )
        answer = web.post(
            "/api/token/",
            headers={"X-CSRFToken": web.cookies["csrftoken"], "Referer": f"{studio_server.url}/"},
        )
        assert answer.status_code == 201
        pat = answer.json()["token"]
    assert pat.count(".") == 2  # a JWT refresh token, not the legacy token
    with StudioClient(studio_server.url, pat) as client:
        assert client.check()["email"] == creds.email  # raw httpx path (Bearer after refresh)
        project = client.create_project("pat project", "<View><Image name='image' value='$image'/></View>")
        assert client.find_project("pat project")["id"] == project["id"]  # SDK path


@pytest.mark.studio
def test_cli_push_replay_pull_and_no_token_in_logs(studio_server, tmp_path, monkeypatch):
    sw = make_workspace(studio_server, tmp_path, 6)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", studio_server.token)
    runner = CliRunner()
    pushed = runner.invoke(app, ["push", "-w", str(sw.ws.root)])
    assert pushed.exit_code == 0, pushed.output
    assert "6 tasks created" in pushed.output
    replayed = runner.invoke(app, ["studio", "replay", "-w", str(sw.ws.root), "--labels", str(sw.gt_dir)])
    assert replayed.exit_code == 0, replayed.output
    assert "answered 6 tasks" in replayed.output
    pulled = runner.invoke(app, ["pull", "-w", str(sw.ws.root)])
    assert pulled.exit_code == 0, pulled.output
    assert "6 images labeled" in pulled.output
    for output in (pushed.output, replayed.output, pulled.output):
        assert studio_server.token not in output
    log = (studio_server.studio_dir / "server.log").read_text(errors="replace")
    assert (
        studio_server.token not in log
        and server.read_credentials(studio_server.studio_dir).password not in log
    )
    with sw.ws.open_store() as store:
        dump = "\n".join(store.conn.iterdump())
    assert studio_server.token not in dump


def test_status_and_stop_without_a_server(tmp_path):
    (tmp_path / "images").mkdir()
    runner = CliRunner()
    assert (
        runner.invoke(
            app, ["init", "--images", str(tmp_path / "images"), "-w", str(tmp_path / "ws")]
        ).exit_code
        == 0
    )
    status = runner.invoke(app, ["studio", "status", "-w", str(tmp_path / "ws")])
    assert status.exit_code == 1 and "not running" in status.output
    stopped = runner.invoke(app, ["studio", "stop", "-w", str(tmp_path / "ws")])
    assert stopped.exit_code == 0 and "was not running" in stopped.output


@pytest.mark.studio
def test_the_server_folder_is_readable_by_its_owner_only(studio_server):
    """Label Studio's own database holds the API token in plain text: 0700 folders, 0600 files."""
    database = studio_server.studio_dir / "data" / "label_studio.sqlite3"
    assert database.is_file()
    checked = 0
    for root, dirs, files in os.walk(studio_server.studio_dir):
        for name in dirs:
            assert stat.S_IMODE(os.lstat(os.path.join(root, name)).st_mode) == 0o700, os.path.join(root, name)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                assert stat.S_IMODE(os.lstat(path).st_mode) & 0o077 == 0, path
                checked += 1
    assert stat.S_IMODE(os.stat(studio_server.studio_dir).st_mode) == 0o700
    assert checked >= 2  # the database and credentials.json at least
