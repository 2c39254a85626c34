"""--gradio-auth and --api-auth on the real server: what each route family shows to no, wrong, forged and right
credentials; masked passwords; the upload route's size limit and origin check; logging in from the browser."""
import urllib.parse
from pathlib import Path

import pytest
import requests

from tests.helpers import serving_checkpoints

pytestmark = [pytest.mark.server, pytest.mark.slow]

PAGE_USER, PAGE_PASSWORD = "painter", "page-pw-123"
API_USER, API_PASSWORD = "robot", "api-pw-456"
UPLOAD_LIMIT = 20 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_dir):
    with serving_checkpoints(tmp_path_factory.mktemp("auth"), tiny_dir, "--api", "--api-auth",
                             f"{API_USER}:{API_PASSWORD}", "--gradio-auth", f"{PAGE_USER}:{PAGE_PASSWORD}",
                 "--max-upload-size", f"{UPLOAD_LIMIT // 1024}kb") as running:
        yield running.url


def page_session(url: str, password: str) -> requests.Session:
    """A browser-like session after logging in to the page with `password`."""
    session = requests.Session()
    session.post(url + "/login", data={"username": PAGE_USER, "password": password}, timeout=30)
    return session


def forged_session(url: str) -> requests.Session:
    """Gradio's login cookies, with values nobody was given."""
    names = page_session(url, PAGE_PASSWORD).cookies.keys()
    assert names, "the right password gives a session cookie"
    session = requests.Session()
    for name in names:
        session.cookies.set(name, "made-up-token", domain=urllib.parse.urlsplit(url).hostname)
    return session


def answers(url: str, session: requests.Session, basic: tuple[str, str] | None) -> dict[str, requests.Response]:
    """One request to each route family."""
    def get(path):
        return session.get(url + path, auth=basic, timeout=60)
    return {
        "page": get("/"),
        "config": get("/config"),
        "event": session.post(url + "/gradio_api/queue/join", auth=basic, timeout=30,
                              json={"data": [], "fn_index": 0, "session_hash": "auth-test"}),
        "upload": session.post(url + "/gradio_api/upload", auth=basic, timeout=30,
                               files={"files": ("a.txt", b"hello")}),
        "api": get("/sdapi/v1/sd-models"),
        "docs": get("/docs"),
        "openapi": get("/openapi.json"),
        "preview": get("/extra-networks/preview/" + "0" * 24),
    }


def test_nothing_but_the_login_page_before_login(server):
    url = server
    for who, session in (("nobody", requests.Session()), ("wrong password", page_session(url, "guess")),
                         ("forged cookie", forged_session(url))):
        got = answers(url, session, None)
        page = got.pop("page")
        assert page.status_code == 200, who
        assert "auth_required" in page.text and "tiny-sd1" not in page.text, who
        assert "named_endpoints" not in page.text and "/txt2img" not in page.text, who  # no API description
        for route, answer in got.items():
            assert answer.status_code == 401, (who, route, answer.status_code)


def test_the_page_password_opens_the_page_but_not_the_api(server):
    url = server
    got = answers(url, page_session(url, PAGE_PASSWORD), (PAGE_USER, PAGE_PASSWORD))
    assert got["page"].status_code == 200 and "tiny-sd1" in got["page"].text
    assert got["config"].status_code == 200
    assert got["event"].status_code == 200
    assert got["upload"].status_code == 200
    assert got["preview"].status_code == 404  # past the login check: no such picture
    for route in ("api", "docs", "openapi"):
        assert got[route].status_code == 401, route


def test_the_api_password_opens_the_api_and_its_docs_and_cmd_flags_hide_passwords(server):
    url = server
    basic = (API_USER, API_PASSWORD)
    got = answers(url, requests.Session(), basic)
    for route in ("api", "docs", "openapi"):
        assert got[route].status_code == 200, route
    assert "/sdapi/v1/txt2img" in got["openapi"].json()["paths"]
    assert got["config"].status_code == 401  # the API's password is not the page's
    flags = requests.get(url + "/sdapi/v1/cmd-flags", auth=basic, timeout=30)
    assert flags.status_code == 200
    assert flags.json()["gradio_auth"] == flags.json()["api_auth"] == "***"
    assert PAGE_PASSWORD not in flags.text and API_PASSWORD not in flags.text


def test_uploads_are_limited_in_size_and_to_this_page_and_allowed_origins(server):
    url = server
    session = page_session(url, PAGE_PASSWORD)

    def upload(size: int, origin: str | None = None) -> int:
        headers = {"Origin": origin} if origin else {}
        return session.post(url + "/gradio_api/upload", files={"files": ("x.bin", b"x" * size)}, headers=headers,
                            timeout=30).status_code

    assert upload(UPLOAD_LIMIT - 1024) == 200
    assert upload(UPLOAD_LIMIT + 1024) == 413
    assert upload(100, origin=url) == 200  # the page itself
    assert upload(100, origin="http://evil.example") == 403
    assert upload(100, origin="null") == 403


@pytest.mark.browser
def test_logging_in_from_the_browser_shows_the_page(server):
    from tests.test_browser import ARGS, CHROMIUM
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (run ./run_tests.sh)")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(server)
        page.get_by_label("username").fill(PAGE_USER)
        page.get_by_label("password").fill(PAGE_PASSWORD)
        page.get_by_role("button", name="Login").click()
        page.locator("#txt2img_generate").wait_for(timeout=60_000)
        browser.close()


def test_a_local_server_answers_only_to_its_own_host_names(server):
    """DNS rebinding: a page on evil.example whose name an attacker re-points at 127.0.0.1 sends its own
    host name; a server for this computer only refuses it, on every route."""
    port = urllib.parse.urlsplit(server).port
    for path in ("/", "/sdapi/v1/options", "/docs"):
        refused = requests.get(server + path, headers={"Host": f"evil.example:{port}"}, timeout=30)
        assert refused.status_code == 400, path
    for name in ("127.0.0.1", "localhost"):
        answer = requests.get(server + "/sdapi/v1/options", headers={"Host": f"{name}:{port}"},
                              auth=(API_USER, API_PASSWORD), timeout=30)
        assert answer.status_code == 200, name


def test_the_host_check_is_off_when_others_may_reach_the_page():
    from modules.cmd_args import parse_args
    from modules.cmd_args import serves_beyond_this_computer as beyond
    assert not beyond(parse_args([]))
    assert all(beyond(parse_args(flags)) for flags in (["--listen"], ["--share"], ["--server-name", "pc.lan"]))
