"""The launcher and command line: webui.sh from a fresh copy, flags, LAN binding, auth, port in use."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pytest

from webui import parse_auth
from modules.cmd_args import parse_args

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(proc, log: Path, text: str, timeout: float):
    deadline = time.time() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"never saw {text!r}:\n" + log.read_text(errors="replace")[-4000:])
        time.sleep(0.5)


def start(args: list[str], log: Path, cmd=None, cwd=REPO, env=None):
    out = open(log, "w")
    return subprocess.Popen(cmd or [sys.executable, "webui.py", *args], cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True)


def stop(proc) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return proc.wait()


def test_auth_flags(tmp_path):
    assert parse_auth(parse_args(["--gradio-auth", "ann:pw1,bob:p:w"])) == [("ann", "pw1"), ("bob", "p:w")]
    f = tmp_path / "auth.txt"
    f.write_text("cy:x\ndee:y,eve:z\n")
    assert parse_auth(parse_args(["--gradio-auth-path", str(f)])) == [("cy", "x"), ("dee", "y"), ("eve", "z")]
    with pytest.raises(SystemExit, match="USER:PASSWORD"):
        parse_auth(parse_args(["--gradio-auth", "nopassword"]))
    assert parse_auth(parse_args([])) is None


def test_listen_binds_all_interfaces_and_auth_refuses_a_wrong_password(tmp_path):
    port = free_port()
    proc = start(["--data-dir", str(tmp_path), "--listen", "--port", str(port), "--gradio-auth", "ann:secret"],
                 tmp_path / "log.txt")
    try:
        wait_for(proc, tmp_path / "log.txt", "Running on local URL", 120)
        listening = [c.laddr for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
        assert ("0.0.0.0", port) in [(a.ip, a.port) for a in listening]
        url = f"http://127.0.0.1:{port}"
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
    finally:
        stop(proc)


def test_port_in_use_is_explained(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = start(["--data-dir", str(tmp_path), "--port", str(port)], tmp_path / "log.txt")
        assert proc.wait(timeout=120) == 1
    assert "--port" in (tmp_path / "log.txt").read_text()


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


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_webui_sh_installs_starts_serves_and_restarts_without_installing(tmp_path):
    """As a new user: a clean copy, ./webui.sh creates the venv, installs, serves; Ctrl+C; start again."""
    repo = _fresh_copy(tmp_path / "repo")
    port = free_port()
    cmd = ["bash", "webui.sh", "-f", "--port", str(port), "--data-dir", str(tmp_path / "data")]
    proc = start([], tmp_path / "first.log", cmd=cmd, cwd=repo)
    wait_for(proc, tmp_path / "first.log", "Running on local URL", 900)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
        assert r.status == 200
    stop(proc)
    first = (tmp_path / "first.log").read_text()
    assert "Creating a Python environment" in first and "Installing requirements" in first

    started = time.time()
    proc = start([], tmp_path / "second.log", cmd=cmd, cwd=repo)
    wait_for(proc, tmp_path / "second.log", "Running on local URL", 300)
    second_seconds = time.time() - started
    stop(proc)
    second = (tmp_path / "second.log").read_text()
    assert "Installing requirements" not in second and "Creating a Python environment" not in second
    assert second_seconds < 120
