"""What several test files share: the real program on a loopback port, its page's /config, and the steps of
driving that page in a browser. (Fixtures are in conftest.py.)"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
READY_LINE = "Running on local URL"  # printed once the server answers
LOG_TAIL = 6000  # characters of a server's log shown when something fails

_servers_to_report: list[Server] = []  # up during the current test: conftest adds their logs to a failure


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """One run of the program (webui.py, or webui.sh around it), its output going to a log file."""
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log()[-LOG_TAIL:]

    def wait_until_serving(self, timeout: float = 120) -> None:
        """A server that exits first, or is not up within `timeout` seconds, fails the test with its log."""
        deadline = time.monotonic() + timeout
        while READY_LINE not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                _servers_to_report.remove(self)  # the failure below shows its log already
                pytest.fail(f"never saw {READY_LINE!r}:\n{self.log_tail()}")
            time.sleep(0.3)

    def stop(self) -> int:
        """Ctrl+C, as a user stops it; what does not stop within 30 s is killed. Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """The process and everything it started (it leads its own process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group has exited already
        return self.proc.wait()


def launch(command: list[str], log_path: Path, port: int, cwd: Path = REPO) -> Server:
    """Start `command`, which is to serve on `port`, without waiting for it."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    server = Server(proc, port, log_path)
    _servers_to_report.append(server)
    return server


def webui_command(data_dir: Path, port: int, *flags: str) -> list[str]:
    return [sys.executable, "webui.py", "--data-dir", str(data_dir), "--port", str(port), *flags]


@contextmanager
def serving(data_dir: Path, *flags: str) -> Iterator[Server]:
    """webui.py over `data_dir` on a free port, from when it answers to the end of the with block; its log is
    data_dir/server.log."""
    port = free_port()
    server = launch(webui_command(data_dir, port, *flags), data_dir / "server.log", port)
    try:
        server.wait_until_serving()
        yield server
    finally:
        server.stop()


@contextmanager
def serving_checkpoints(data_dir: Path, tiny_dir: Path, *flags: str,
                        checkpoints: tuple[str, ...] = ("tiny-sd1",)) -> Iterator[Server]:
    """`serving` with tiny checkpoints copied into data_dir's models/Stable-diffusion, the first one loaded."""
    ckpts = data_dir / "models" / "Stable-diffusion"
    ckpts.mkdir(parents=True, exist_ok=True)
    for name in checkpoints:
        shutil.copy(tiny_dir / f"{name}.safetensors", ckpts)
    with serving(data_dir, "--ckpt", str(ckpts / f"{checkpoints[0]}.safetensors"), *flags) as server:
        yield server


def servers_to_report() -> list[Server]:
    """The servers up during the current test: those still running and those stopped since the last one ended."""
    return list(_servers_to_report)


def forget_stopped_servers() -> None:
    _servers_to_report[:] = [s for s in _servers_to_report if s.proc.poll() is None]


def http_get(url: str) -> tuple[int, bytes]:
    """Status and body, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def component(config: dict, elem_id: str) -> dict:
    """The component of the page's /config with this elem_id."""
    return next(c for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)


def set_number(page, elem_id: str, value: float) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")


def choose(page, elem_id: str, option) -> None:
    """Pick an option of a Gradio dropdown."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option).click()


def set_size_and_steps(page, tab: str, steps: int, size: int = 64) -> None:
    """A small square picture and few steps on the txt2img or img2img tab: quick on the tiny test model."""
    for field, value in (("width", size), ("height", size), ("steps", steps)):
        set_number(page, f"{tab}_{field}", value)


def generate_small_picture(page, tab: str, steps: int, expect: str) -> str:
    """Set a small size and `steps`, click Generate and wait until the infotext shows `expect`; returns the
    infotext. The tab's other fields are as the test left them."""
    set_size_and_steps(page, tab, steps)
    page.locator(f"#{tab}_generate").click()
    page.wait_for_function(f"document.querySelector('#html_info_{tab}').innerText.includes({json.dumps(expect)})",
                           timeout=120_000)
    return page.locator(f"#html_info_{tab}").inner_text()


def job_context(services, tmp_path: Path, checkpoint: str = "tiny-sd1"):
    """A job context over `services` with `checkpoint` loaded, its own copy of the options (as a job with override
    settings gets) and its own outputs folder, without console progress."""
    from modules.generation.progress import GenerationState
    services.models.load(checkpoint)
    return replace(services.context, options=replace(services.options), outputs_dir=tmp_path / "outputs",
                   state=GenerationState(console=False))
