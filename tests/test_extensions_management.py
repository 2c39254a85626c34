"""Extensions: found in extensions-builtin/ and extensions/, switched on and off by A1111's settings and flags,
their preload.py flags, their install.py run once per version, and the Extensions tab's installs, update checks
and Apply (in process, over temporary folders; the browser test drives the page)."""
import functools
import http.server
import json
import os
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from modules import extensions
from modules.cmd_args import parse_args
from modules.extensions import active_extensions, discover, run_installers
from modules.options import Options
from modules.ui.extensions import ACCESS_REFUSED, ExtensionsTab

GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def make_extension(folder: Path, files: dict[str, str] | None = None) -> Path:
    folder.mkdir(parents=True)
    for name, text in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def fake_clone(folder, url, branch, commit, packed=False):
    """A .git folder as git leaves it, without running git."""
    git = folder / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "config").write_text(f'[core]\n\tbare = false\n[remote "origin"]\n\turl = {url}\n')
    (git / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    if packed:
        (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{commit} refs/heads/{branch}\n")
    else:
        (git / "refs" / "heads" / branch).write_text(commit + "\n")


def git(*args, cwd):
    subprocess.run(["git", *args], cwd=cwd, env={**os.environ, **GIT}, check=True, capture_output=True)


@pytest.fixture
def dirs(tmp_path):
    """(built-in folder, data folder, its extensions/ folder)."""
    data = tmp_path / "data"
    (data / "extensions").mkdir(parents=True)
    return tmp_path / "extensions-builtin", data, data / "extensions"


def tab_for(dirs, *flags, options=None, restarts=None, **kwargs) -> ExtensionsTab:
    builtin, data, user = dirs
    options = options or Options()
    return ExtensionsTab(user, options, lambda: options.save(data / "config.json"),
                         lambda: restarts.append("restart") if restarts is not None else None,
                         parse_args(["--data-dir", str(data), *flags]), builtin_dir=builtin, **kwargs)


# ---- discovery and switches ---------------------------------------------------------------------------------

def test_finds_builtin_and_user_extensions_and_what_each_holds(dirs):
    builtin, _, user = dirs
    make_extension(builtin / "ours", {"scripts/b.py": "", "scripts/a.py": "", "scripts/notes.txt": "",
                                      "style.css": "", "localizations/fr.json": "{}"})
    (builtin / "ours" / "scripts" / "folder.py").mkdir()  # a folder is not a script
    make_extension(user / "theirs", {"javascript/x.js": "", "preload.py": "", "install.py": ""})
    make_extension(user / ".hidden", {"scripts/a.py": ""})
    (user / "README.txt").write_text("not an extension")
    fake_clone(user / "theirs", "https://github.com/someone/theirs.git", "main", "a1b2c3d4e5f6" * 3)
    fake_clone(make_extension(user / "packed"), "https://example.com/p", "dev", "ffeeddcc" * 5, packed=True)

    found = {e.name: e for e in discover(builtin, user, Options())}
    assert list(found) == ["ours", "packed", "theirs"]  # built-in first, then the user's, each by name
    ours, theirs = found["ours"], found["theirs"]
    assert ours.is_builtin and not theirs.is_builtin
    assert [p.name for p in ours.scripts] == ["a.py", "b.py"]
    assert ours.style == builtin / "ours" / "style.css" and ours.localizations == builtin / "ours" / "localizations"
    assert ours.javascript == [] and ours.preload_script is None and ours.installer is None
    assert [p.name for p in theirs.javascript] == ["x.js"] and theirs.style is None and theirs.localizations is None
    assert theirs.preload_script.name == "preload.py" and theirs.installer.name == "install.py"
    assert (theirs.url, theirs.branch, theirs.commit) == ("https://github.com/someone/theirs.git", "main", "a1b2c3d4")
    assert (found["packed"].branch, found["packed"].commit) == ("dev", "ffeeddcc")
    assert ours.url == "" and ours.commit == ""
    assert discover(builtin / "missing", user / "missing", Options()) == []


def test_settings_and_flags_decide_which_extensions_load(dirs):
    builtin, _, user = dirs
    for folder in (builtin / "b-ours", builtin / "a-ours", user / "x", user / "y", user / "z"):
        make_extension(folder)

    def names(options, *flags, failed=()):
        args = parse_args(["--data-dir", str(dirs[1]), *flags])
        return [e.name for e in active_extensions(discover(builtin, user, options), options, args, failed)]

    assert names(Options()) == ["a-ours", "b-ours", "x", "y", "z"]
    chosen = Options(disabled_extensions=["y", "a-ours"])
    assert [e.enabled for e in discover(builtin, user, chosen)] == [False, True, True, False, True]
    assert names(chosen) == ["b-ours", "x", "z"]
    assert names(chosen, failed={"z"}) == ["b-ours", "x"]
    assert names(Options(disable_all_extensions="extra")) == ["a-ours", "b-ours"]
    assert names(Options(disable_all_extensions="all")) == []
    assert names(Options(), "--disable-extra-extensions") == ["a-ours", "b-ours"]
    assert names(Options(), "--disable-all-extensions") == []


def test_the_settings_are_saved_in_config_json_with_a1111s_keys(tmp_path):
    Options(disabled_extensions=["x"], disable_all_extensions="extra").save(tmp_path / "config.json")
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["disabled_extensions"] == ["x"] and saved["disable_all_extensions"] == "extra"
    (tmp_path / "config.json").write_text(json.dumps({"disable_all_extensions": "some"}))
    assert Options.load(tmp_path / "config.json").disable_all_extensions == "none"  # not one of A1111's values


# ---- preload.py ---------------------------------------------------------------------------------------------

PRELOAD = 'def preload(parser):\n    parser.add_argument("{flag}", default="unset", help="from an extension")\n'


def test_a_preload_adds_flags_that_the_command_line_then_accepts(dirs):
    _, data, user = dirs
    make_extension(user / "flags", {"preload.py": PRELOAD.format(flag="--my-extension-dir")})
    args = parse_args(["--data-dir", str(data), "--my-extension-dir", "/somewhere"])
    assert args.my_extension_dir == "/somewhere"
    assert parse_args(["--data-dir", str(data)]).my_extension_dir == "unset"
    (data / "config.json").write_text(json.dumps({"disabled_extensions": ["flags"]}))  # A1111: not preloaded then
    with pytest.raises(SystemExit):
        parse_args(["--data-dir", str(data), "--my-extension-dir", "/somewhere"])


def test_a_broken_preload_is_reported_by_name_and_the_others_still_add_their_flags(dirs, caplog):
    _, data, user = dirs
    make_extension(user / "a-syntax", {"preload.py": "def preload(parser)\n"})
    make_extension(user / "b-raises", {"preload.py": "def preload(parser):\n    raise RuntimeError('boom')\n"})
    make_extension(user / "c-taken", {"preload.py": PRELOAD.format(flag="--listen")})
    make_extension(user / "d-good", {"preload.py": PRELOAD.format(flag="--good-flag")})
    args = parse_args(["--data-dir", str(data), "--good-flag", "yes", "--listen"])
    assert args.good_flag == "yes" and args.listen is True
    logged = caplog.text
    assert all(f"extension {name}: preload.py failed" in logged for name in ("a-syntax", "b-raises", "c-taken"))
    assert "d-good" not in logged
    assert sorted(args.extension_preload_errors) == ["a-syntax", "b-raises", "c-taken"]  # for the Extensions tab


# ---- install.py ---------------------------------------------------------------------------------------------

INSTALLER = """import os, sys
import modules.options  # the program's modules are importable, as A1111's launch module is for its extensions
with open("runs.txt", "a") as f:
    f.write(sys.executable + "\\n")
"""


def test_install_py_runs_once_and_again_only_when_it_changes(dirs):
    _, _, user = dirs
    folder = make_extension(user / "needs-things", {"install.py": INSTALLER})
    stamps = user / extensions.INSTALL_STAMPS

    def runs():
        return (folder / "runs.txt").read_text().splitlines() if (folder / "runs.txt").exists() else []

    assert run_installers(discover(dirs[0], user, Options()), stamps) == {}
    assert runs() == [sys.executable]  # this program's python, in the extension's folder
    assert run_installers(discover(dirs[0], user, Options()), stamps) == {}
    assert len(runs()) == 1
    (folder / "install.py").write_text(INSTALLER + "# a new version\n")
    run_installers(discover(dirs[0], user, Options()), stamps)
    assert len(runs()) == 2
    assert discover(dirs[0], user, Options())[0].name == "needs-things"  # the stamps file is no extension


def test_a_failing_install_py_leaves_its_extension_out_with_the_error(dirs):
    _, _, user = dirs
    make_extension(user / "offline", {"install.py": "import sys\nsys.exit('pip: no network to install foo')\n"})
    make_extension(user / "fine", {"install.py": "print('ok')\n"})
    make_extension(user / "slow", {"install.py": "import time\ntime.sleep(60)\n"})
    found = discover(dirs[0], user, Options())
    errors = run_installers(found, user / extensions.INSTALL_STAMPS, timeout=2)
    assert set(errors) == {"offline", "slow"}
    assert "exit code 1" in errors["offline"] and "pip: no network to install foo" in errors["offline"]
    assert "did not finish within 2 s" in errors["slow"]
    assert [e.name for e in active_extensions(found, Options(), failed=errors)] == ["fine"]
    table = tab_for(dirs, install_errors=errors).table()
    assert "failed: install.py failed (exit code 1): pip: no network to install foo" in table
    # a failure is not recorded as done: the next start tries again
    offline = [e for e in found if e.name == "offline"]
    assert set(run_installers(offline, user / extensions.INSTALL_STAMPS)) == {"offline"}


# ---- the Extensions tab: installing ---------------------------------------------------------------------------

def test_install_from_a_local_folder(dirs, tmp_path):
    _, _, user = dirs
    source = make_extension(tmp_path / "work" / "my-ext", {"scripts/s.py": "", "install.py": INSTALLER})
    tab = tab_for(dirs)
    table, message = tab.install_from_folder(str(source), "")
    assert "Installed my-ext" in message and (user / "my-ext" / "scripts" / "s.py").is_file()
    assert (user / "my-ext" / "runs.txt").is_file()  # its install.py ran at once
    assert "my-ext" in table and "loaded after Apply and restart UI" in table
    assert "already installed" in tab.install_from_folder(str(source), "")[1]
    assert "Installed other" in tab.install_from_folder(str(source), "other")[1]
    for folder, name, problem in [(str(source), "../escape", "not a plain folder name"),
                                  (str(source), "-rf", "not a plain folder name"),
                                  ("work/my-ext", "", "not a full path"),
                                  (str(tmp_path / "nothing"), "", "is not a folder"),
                                  (str(dirs[1]), "loop", "contains the extensions folder")]:
        assert problem in tab.install_from_folder(folder, name)[1], (folder, name)
    assert sorted(p.name for p in user.iterdir()) == [extensions.INSTALL_STAMPS, "my-ext", "other"]


def test_install_from_url_without_network_says_so_and_leaves_nothing(dirs):
    _, _, user = dirs
    tab = tab_for(dirs)
    _, message = tab.install_from_url("http://127.0.0.1:9/x.git", "", "")
    assert "could not clone http://127.0.0.1:9/x.git: the server cannot be reached" in message
    assert "no network connection" in message
    for url in ("file:///tmp/x.git", "/tmp/x.git", "--upload-pack=touch /tmp/pwned", "ext::sh -c touch% /tmp/p",
                "-oProxyCommand=x@host:repo", "ssh://-oProxyCommand=x/repo"):
        assert "is not the address of a git repository on a server" in tab.install_from_url(url, "", "")[1], url
    assert "not a branch name" in tab.install_from_url("https://example.com/x.git", "--upload-pack=x", "")[1]
    assert "not a plain folder name" in tab.install_from_url("https://example.com/x.git", "", "a/b")[1]
    assert list(user.iterdir()) == []


@contextmanager
def git_server(root: Path):
    """A dumb-HTTP git server over `root` on a free loopback port (git clones and fetches from static files)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_install_from_url_check_for_updates_and_update_on_apply(dirs, tmp_path):
    _, data, user = dirs
    work = make_extension(tmp_path / "upstream-work", {"scripts/s.py": "VERSION = 1\n"})
    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-q", "-m", "one", cwd=work)
    served = tmp_path / "served"
    git("clone", "-q", "--bare", str(work), str(served / "cool-ext.git"), cwd=tmp_path)
    git("update-server-info", cwd=served / "cool-ext.git")
    restarts = []
    tab = tab_for(dirs, restarts=restarts)
    with git_server(served) as base:
        table, message = tab.install_from_url(f"{base}/cool-ext.git", "", "")
        assert "Installed cool-ext" in message, message
        assert (user / "cool-ext" / "scripts" / "s.py").read_text() == "VERSION = 1\n"
        assert f"{base}/cool-ext.git" in table and "main" in table
        table, message = tab.check_updates()
        assert "0 can be updated" in message and "latest" in table

        (work / "scripts" / "s.py").write_text("VERSION = 2\n")
        git("commit", "-q", "-am", "two", cwd=work)
        git("push", "-q", str(served / "cool-ext.git"), "main", cwd=work)
        git("update-server-info", cwd=served / "cool-ext.git")
        table, message = tab.check_updates()
        assert "1 can be updated" in message and "name='update_cool-ext' checked" in table
        assert "1 new commit" in table
        message, restarting = tab.apply("[]", '["cool-ext"]', "none")
    assert restarting and restarts == ["restart"], message
    assert (user / "cool-ext" / "scripts" / "s.py").read_text() == "VERSION = 2\n"
    assert "update_cool-ext" not in tab.table()
    table, message = tab.check_updates()  # the server is gone now
    assert "could not be checked" in message and "cannot be reached" in table


def test_changes_are_refused_when_others_may_reach_the_server(dirs, tmp_path):
    _, data, user = dirs
    source = make_extension(tmp_path / "my-ext")
    restarts = []
    tab = tab_for(dirs, "--listen", restarts=restarts)
    assert ACCESS_REFUSED in tab.notes().replace("&quot;", '"')
    for _, message in (tab.install_from_folder(str(source), ""), tab.install_from_url("https://example.com/x", "", ""),
                       tab.check_updates()):
        assert "--enable-insecure-extension-access" in message
    message, restarting = tab.apply('["x"]', "[]", "none")
    assert not restarting and "--enable-insecure-extension-access" in message and restarts == []
    assert list(user.iterdir()) == [] and not (data / "config.json").exists()
    allowed = tab_for(dirs, "--listen", "--enable-insecure-extension-access")
    assert "Installed my-ext" in allowed.install_from_folder(str(source), "")[1]
    assert "name='enable_my-ext' checked disabled" in tab_for(dirs, "--server-name", "0.0.0.0").table()


# ---- the Extensions tab: Apply and the table ------------------------------------------------------------------

def test_apply_saves_the_disabled_extensions_and_restarts(dirs):
    builtin, data, user = dirs
    make_extension(user / "keep")
    make_extension(user / "drop")
    make_extension(builtin / "ours")
    restarts = []
    options = Options()
    tab = tab_for(dirs, options=options, restarts=restarts)
    message, restarting = tab.apply('["drop"]', "[]", "extra")
    assert restarting and restarts == ["restart"] and "Restarting" in message
    saved = json.loads((data / "config.json").read_text())
    assert saved["disabled_extensions"] == ["drop"] and saved["disable_all_extensions"] == "extra"
    table = tab.table()
    assert "name='enable_drop'>" in table and "name='enable_keep' checked>" in table
    assert 'off (&quot;Disable all extensions&quot;: extra)' in table and "built-in" in table
    assert "Disable all extensions" in tab.notes()
    message, restarting = tab.apply('{"not": "a list"}', "[]", "none")
    assert not restarting and "Nothing was changed" in message and restarts == ["restart"]
    assert not tab_for(dirs, "--freeze-settings", restarts=restarts).apply("[]", "[]", "none")[1]
    assert options.disabled_extensions == ["drop"]


def test_the_table_shows_loader_errors_escapes_names_and_says_when_empty(dirs):
    _, _, user = dirs
    tab = tab_for(dirs, load_errors=lambda: {"<i>odd": "ImportError: no module named <b>"})
    assert "No extensions in" in tab.table()
    make_extension(user / "<i>odd")
    table = tab.table()
    assert "&lt;i&gt;odd" in table and "<i>" not in table and "<b>" not in table
    assert "failed: ImportError: no module named &lt;b&gt;" in table
