"""The launcher and command line: webui.sh from a fresh copy, flags, LAN binding, auth, port in use."""
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from modules.cmd_args import parse_args
from tests.helpers import REPO, free_port, launch, serving, webui_command
from webui import parse_auth


def test_auth_flags(tmp_path):
    assert parse_auth(parse_args(["--gradio-auth", "ann:pw1,bob:p:w"])) == [("ann", "pw1"), ("bob", "p:w")]
    f = tmp_path / "auth.txt"
    f.write_text("cy:x\ndee:y,eve:z\n")
    assert parse_auth(parse_args(["--gradio-auth-path", str(f)])) == [("cy", "x"), ("dee", "y"), ("eve", "z")]
    with pytest.raises(SystemExit, match="USER:PASSWORD"):
        parse_auth(parse_args(["--gradio-auth", "nopassword"]))
    assert parse_auth(parse_args([])) is None


@pytest.mark.server
def test_listen_binds_all_interfaces_and_auth_refuses_a_wrong_password(tmp_path):
    with serving(tmp_path, "--listen", "--gradio-auth", "ann:secret") as server:
        port, url = server.port, server.url
        listening = [c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
        assert ("0.0.0.0", port) in [(a.ip, a.port) for a in listening]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "/config", timeout=10)
        assert denied.value.code == 401

        def login(password):
            data = urllib.parse.urlencode({"username": "ann", "password": password}).encode()
            return urllib.request.urlopen(urllib.request.Request(url + "/login", data=data), timeout=10)
        with pytest.raises(urllib.error.HTTPError) as wrong:
            login("guess")
        assert wrong.value.code in (400, 401)
        ok = login("secret")
        assert ok.status == 200 and json.loads(ok.read()).get("success") is True


@pytest.mark.server
def test_port_in_use_is_explained(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = launch(webui_command(tmp_path, port), tmp_path / "server.log", port)
        assert server.proc.wait(timeout=120) == 1
    assert "--port" in server.log()


def _fresh_copy(dest: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, files):
        src = REPO / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
    return dest


def test_webui_sh_refuses_root_and_bad_python(tmp_path):
    repo = _fresh_copy(tmp_path / "repo")
    if os.geteuid() == 0:
        out = subprocess.run(["bash", "webui.sh"], cwd=repo, capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "-f" in out.stdout and "root" in out.stdout
    out = subprocess.run(["bash", "webui.sh", "-f"], cwd=repo, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHON": "no-such-python3"})
    assert out.returncode == 1 and "no-such-python3" in out.stdout and "was not found" in out.stdout


@pytest.mark.server
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_webui_sh_installs_starts_serves_and_restarts_without_installing(tmp_path):
    """As a new user: a clean copy, ./webui.sh creates the venv, installs, serves; Ctrl+C; start again."""
    repo = _fresh_copy(tmp_path / "repo")
    port = free_port()
    cmd = ["bash", "webui.sh", "-f", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    server = launch(cmd, tmp_path / "first.log", port, cwd=repo)
    server.wait_until_serving(timeout=900)
    with urllib.request.urlopen(server.url + "/", timeout=30) as r:
        assert r.status == 200
    server.stop()
    first = server.log()
    assert "Creating a Python environment" in first and "Installing requirements" in first

    started = time.time()
    server = launch(cmd, tmp_path / "second.log", port, cwd=repo)
    server.wait_until_serving(timeout=300)
    second_seconds = time.time() - started
    server.stop()
    second = server.log()
    assert "Installing requirements" not in second and "Creating a Python environment" not in second
    assert second_seconds < 120
