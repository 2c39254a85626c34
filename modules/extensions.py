"""Extensions as A1111 lays them out: one folder each in extensions-builtin/ (ours, beside webui.py) and in the
user's extensions/ (usually git clones).

Here: finding them and which are on (A1111's `disabled_extensions` and `disable_all_extensions` settings, the
--disable-extra-extensions and --disable-all-extensions flags), running their preload.py (flags) and install.py
(requirements), and installing and updating them with git. Loading their scripts is modules.scripts' work.
"""
from __future__ import annotations

import configparser
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modules import user_files
from modules.options import Options

log = logging.getLogger(__name__)

# webui.py's folder. (modules.paths has it too, but it imports modules.cmd_args, which imports this module.)
PROGRAM_DIR = Path(__file__).resolve().parent.parent
BUILTIN_DIR = PROGRAM_DIR / "extensions-builtin"
# `run_installers`' record of which install.py ran, in the user's extensions folder (ignored by git and discovery)
INSTALL_STAMPS = ".installed.json"
INSTALL_TIMEOUT_S = 600
CLONE_TIMEOUT_S = 600
FETCH_TIMEOUT_S = 60
LOCAL_GIT_TIMEOUT_S = 30
ERROR_TAIL = 1500  # characters of a failed program's output kept in its error

# A1111's rule for what may be cloned: a network repository, never a local path or anything git reads as an
# option. scp-like "user@host:path" is ssh.
_NETWORK_URL = re.compile(r"(?:https?|git|ssh)://[A-Za-z0-9\[]\S*|[A-Za-z0-9_][\w.-]*@[A-Za-z0-9][\w.-]*:\S+")
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_][\w.-]*")
_BRANCH = re.compile(r"[A-Za-z0-9_][\w./-]*")
_OFFLINE_SIGNS = ("could not resolve host", "failed to connect", "connection refused", "network is unreachable",
                  "connection timed out", "no route to host", "temporary failure in name resolution",
                  "couldn't connect")


@dataclass(frozen=True)
class Extension:
    name: str  # the folder's name
    path: Path
    url: str  # the git remote, or "" when it is not a git clone
    branch: str
    commit: str  # short hash, or ""
    modified: str  # date of the newest top-level file
    is_builtin: bool = False
    enabled: bool = True  # not in the disabled_extensions setting; `active_extensions` also applies the switches

    # A1111's attribute names, which extensions read from modules.extensions.extensions
    remote = property(lambda self: self.url)
    commit_hash = property(lambda self: self.commit)
    version = property(lambda self: self.commit)
    canonical_name = property(lambda self: self.name.lower())

    def list_files(self, subdir: str, suffix: str) -> list[Path]:
        """The files (not folders) in `subdir` whose names end with `suffix` (any case), in name order."""
        folder = self.path / subdir
        if not folder.is_dir():
            return []
        return [p for p in sorted(folder.iterdir()) if p.suffix.lower() == suffix and p.is_file()]

    @property
    def scripts(self) -> list[Path]:
        return self.list_files("scripts", ".py")

    @property
    def javascript(self) -> list[Path]:
        return self.list_files("javascript", ".js")

    @property
    def style(self) -> Path | None:
        return self._file("style.css")

    @property
    def localizations(self) -> Path | None:
        folder = self.path / "localizations"
        return folder if folder.is_dir() else None

    @property
    def preload_script(self) -> Path | None:
        return self._file("preload.py")

    @property
    def installer(self) -> Path | None:
        return self._file("install.py")

    def _file(self, name: str) -> Path | None:
        path = self.path / name
        return path if path.is_file() else None


class ExtensionError(Exception):
    """An install, copy, update or check that did not happen; the message says why in plain words."""


def _git_info(folder: Path) -> tuple[str, str, str]:
    """(remote url, branch, short commit) read from the .git folder, without running git."""
    git = folder / ".git"
    if git.is_file():  # a worktree / submodule: "gitdir: <path>"
        target = git.read_text(encoding="utf-8", errors="replace").partition("gitdir:")[2].strip()
        git = (folder / target).resolve()
    if not git.is_dir():
        return "", "", ""
    url = ""
    config = configparser.ConfigParser(strict=False)
    try:
        config.read(git / "config", encoding="utf-8")
        url = config.get('remote "origin"', "url", fallback="")
    except configparser.Error:
        pass
    branch, commit = "", ""
    try:
        head = (git / "HEAD").read_text(encoding="utf-8").strip()
    except OSError:
        return url, "", ""
    if head.startswith("ref:"):
        ref = head[4:].strip()
        branch = ref.rsplit("/", 1)[-1]
        ref_file = git / ref
        if ref_file.is_file():
            commit = ref_file.read_text(encoding="utf-8").strip()
        elif (git / "packed-refs").is_file():
            for line in (git / "packed-refs").read_text(encoding="utf-8").splitlines():
                if line.endswith(" " + ref):
                    commit = line.split()[0]
    else:
        commit = head  # detached
    return url, branch, commit[:8]


def list_extensions(folder: Path, is_builtin: bool = False, disabled: Collection[str] = ()) -> list[Extension]:
    """The extension folders in `folder`, by name; a folder whose name starts with "." is not one."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        url, branch, commit = _git_info(path)
        try:
            newest = max((p.stat().st_mtime for p in path.iterdir()), default=path.stat().st_mtime)
        except OSError:
            newest = 0.0
        found.append(Extension(path.name, path, url, branch, commit,
                               time.strftime("%Y-%m-%d %H:%M", time.localtime(newest)) if newest else "",
                               is_builtin=is_builtin, enabled=path.name not in disabled))
    return found


def discover(builtin_dir: Path, user_dir: Path, options: Options) -> list[Extension]:
    """Every extension, built-in ones first, each marked enabled unless the user disabled it by name (as in A1111,
    "Disable all extensions" and the flags do not change that mark: see `active_extensions`)."""
    disabled = set(options.disabled_extensions)
    return list_extensions(builtin_dir, True, disabled) + list_extensions(user_dir, False, disabled)


def switched_off(options: Options, args=None) -> str:
    """Which extensions are off whatever their checkbox says: "none", "extra" (all but the built-in ones) or
    "all", from the "Disable all extensions" setting and the --disable-extra/all-extensions flags."""
    if getattr(args, "disable_all_extensions", False) or options.disable_all_extensions == "all":
        return "all"
    if getattr(args, "disable_extra_extensions", False) or options.disable_all_extensions == "extra":
        return "extra"
    return "none"


def is_switched_off(extension: Extension, mode: str) -> bool:
    return mode == "all" or (mode == "extra" and not extension.is_builtin)


def active_extensions(extensions: Iterable[Extension], options: Options, args=None,
                      failed: Collection[str] = ()) -> list[Extension]:
    """The extensions to load: enabled, not switched off, not among `failed` (e.g. a failed install.py); built-in
    ones first, then the user's, each by name (A1111's order)."""
    mode = switched_off(options, args)
    return sorted((e for e in extensions if e.enabled and not is_switched_off(e, mode) and e.name not in failed),
                  key=lambda e: (not e.is_builtin, e.name))


# ---- preload.py: flags, before the command line is parsed -------------------------------------------------

def _read_json_leniently(path: Path) -> dict:
    """The JSON object in `path`, or {} (no file, not JSON): Options.load reports a broken config.json later."""
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def extensions_to_preload(args, builtin_dir: Path = BUILTIN_DIR) -> list[Extension]:
    """A1111's choice, made before the settings are loaded: every built-in extension, and the user's extensions
    (in --data-dir's extensions/) that config.json's disabled_extensions and disable_all_extensions and the
    --disable-extra/all-extensions flags leave on. `args`: a first look at the command line."""
    data_dir = Path(args.data_dir).expanduser().resolve() if args.data_dir else PROGRAM_DIR
    config_file = (Path(args.ui_settings_file).expanduser().resolve() if args.ui_settings_file
                   else data_dir / "config.json")
    settings = _read_json_leniently(config_file)
    disabled = settings.get("disabled_extensions")
    disabled = {n for n in disabled if isinstance(n, str)} if isinstance(disabled, list) else set()
    found = list_extensions(builtin_dir, True)
    if settings.get("disable_all_extensions", "none") == "none" and not (
            args.disable_extra_extensions or args.disable_all_extensions):
        found += [e for e in list_extensions(data_dir / "extensions") if e.name not in disabled]
    return found


def run_preloads(extensions: Iterable[Extension], parser) -> dict[str, str]:
    """Run each extension's preload.py and its `preload(parser)`, which adds the extension's flags. One that fails
    (syntax error, exception, a flag that is taken) is logged and skipped. Returns {name: error}."""
    errors = {}
    for extension in extensions:
        script = extension.preload_script
        if script is None:
            continue
        try:
            spec = importlib.util.spec_from_file_location(f"extension_preload_{extension.name}", script)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            preload = getattr(module, "preload", None)
            if callable(preload):
                preload(parser)
        except (Exception, SystemExit) as e:  # whatever an extension's code raises: its flags are missing, go on
            log.exception("extension %s: preload.py failed; its command-line flags are not added", extension.name)
            errors[extension.name] = f"preload.py: {type(e).__name__}: {e}"
    return errors


# ---- install.py: requirements, once per version of the file -----------------------------------------------

def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tail(text: str) -> str:
    text = text.strip()
    return text if len(text) <= ERROR_TAIL else "…" + text[-ERROR_TAIL:]


def _run_installer(extension: Extension, timeout: float) -> str | None:
    """Run install.py with this program's python in the extension's folder; the error, or None."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROGRAM_DIR), os.environ.get("PYTHONPATH")]))}
    log.info("extension %s: running install.py", extension.name)
    try:
        done = subprocess.run([sys.executable, str(extension.installer)], cwd=extension.path, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"install.py did not finish within {timeout:.0f} s"
    except OSError as e:
        return f"install.py could not be started: {e}"
    if done.stdout.strip():
        log.info("extension %s: install.py says:\n%s", extension.name, _tail(done.stdout))
    if done.returncode != 0:
        return f"install.py failed (exit code {done.returncode}): {_tail(done.stderr or done.stdout)}"
    return None


def run_installers(extensions: Iterable[Extension], stamps_file: Path,
                   timeout: float = INSTALL_TIMEOUT_S) -> dict[str, str]:
    """Run the install.py of each extension that is new or whose install.py changed since it last succeeded (with
    this python), as recorded in `stamps_file` (JSON, {folder: {"sha256", "python"}}). Returns {name: error} for
    those that failed (exit code, timeout, pip without network): leave them out of this run's loading (the
    `failed` of `active_extensions`); they are tried again at the next start."""
    stamps = _read_json_leniently(stamps_file)
    errors = {}
    for extension in extensions:
        installer = extension.installer
        if installer is None:
            continue
        stamp = {"sha256": _sha256(installer), "python": sys.executable}
        key = str(extension.path.resolve())
        if stamps.get(key) == stamp:
            continue
        error = _run_installer(extension, timeout)
        if error:
            log.error("extension %s is not loaded: %s", extension.name, error)
            errors[extension.name] = error
            continue
        stamps[key] = stamp
        try:
            user_files.write_json(stamps_file, stamps)
        except OSError as e:
            log.warning("could not record that %s's install.py ran (%s); it runs again next time", extension.name, e)
    return errors


# ---- git: install from a URL, check for and get updates ---------------------------------------------------

def _git_env() -> dict[str, str]:
    """Never ask for a password on the console, speak plain English (messages are shown and read), and only use
    network transports (no file://, no ext:: commands), submodules included."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "",
           "GIT_ALLOW_PROTOCOL": "https:http:git:ssh"}
    env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes")
    return env


def _explain_git_failure(output: str, what: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    detail = lines[-1] if lines else "no message"
    if any(sign in output.lower() for sign in _OFFLINE_SIGNS):
        return (f"{what}: the server cannot be reached; there may be no network connection, or the address is "
                f"wrong (git: {detail})")
    return f"{what}: {detail}"


def _git(*args: str, cwd: Path, timeout: float, what: str) -> str:
    """Run git (never through a shell) and return its output; ExtensionError says plainly what went wrong."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=_git_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, errors="replace", timeout=timeout)
    except FileNotFoundError:
        raise ExtensionError(f"{what}: git is not installed; install git to install or update extensions") from None
    except subprocess.TimeoutExpired:
        raise ExtensionError(f"{what}: git did not finish within {timeout:.0f} s; the network may be down or "
                             "slow") from None
    if done.returncode != 0:
        raise ExtensionError(_explain_git_failure(done.stderr or done.stdout, what))
    return done.stdout.strip()


def url_problem(url: str) -> str | None:
    """Why `url` may not be cloned, or None: only http(s), git and ssh addresses of a server are."""
    if not _NETWORK_URL.fullmatch(url):
        return (f"{url!r} is not the address of a git repository on a server: give an http(s)://, git:// or ssh:// "
                "address (a folder on this computer goes in 'Install from a folder')")
    return None


def name_problem(name: str) -> str | None:
    if not _PLAIN_NAME.fullmatch(name):
        return (f"{name!r} is not a plain folder name: use letters, digits, '.', '-' and '_', not starting with "
                "'.' or '-'")
    return None


def name_from_url(url: str) -> str:
    """The folder name git would choose: the last part of the address without .git."""
    last = re.split(r"[/:]", url.rstrip("/"))[-1]
    return last[:-4] if last.endswith(".git") else last


def _check_new_folder(name: str, user_dir: Path, taken: Collection[str]) -> Path:
    if problem := name_problem(name):
        raise ExtensionError(problem)
    target = user_dir / name
    if name in taken or target.exists():
        raise ExtensionError(f"an extension named {name!r} is already installed ({target}); choose another name")
    return target


def _staging(user_dir: Path, name: str) -> Path:
    """Where an install is put together, hidden from discovery until it is complete."""
    user_dir.mkdir(parents=True, exist_ok=True)
    staging = user_dir / f".installing-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    return staging


def clone_extension(url: str, user_dir: Path, name: str = "", branch: str = "",
                    taken: Collection[str] = ()) -> Path:
    """git clone `url` (a network address) into user_dir/<name> (from the URL when empty); `taken`: names of the
    installed extensions (built-in ones too). Returns the new folder; ExtensionError says why not."""
    url, name, branch = url.strip(), name.strip(), branch.strip()
    if problem := url_problem(url):
        raise ExtensionError(problem)
    if branch and not _BRANCH.fullmatch(branch):
        raise ExtensionError(f"{branch!r} is not a branch name")
    target = _check_new_folder(name or name_from_url(url), user_dir, taken)
    staging = _staging(user_dir, target.name)
    try:
        _git("clone", "--quiet", "--recurse-submodules", *([f"--branch={branch}"] if branch else []), "--", url,
             str(staging), cwd=user_dir, timeout=CLONE_TIMEOUT_S, what=f"could not clone {url}")
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def copy_extension(source: Path, user_dir: Path, name: str = "", taken: Collection[str] = ()) -> Path:
    """Copy the folder `source` (symbolic links stay links) into user_dir/<name> (the folder's name when empty).
    Returns the new folder; ExtensionError says why not."""
    source = source.expanduser()
    if not source.is_absolute():
        raise ExtensionError(f"{str(source)!r} is not a full path: give the folder's whole path")
    if not source.is_dir():
        raise ExtensionError(f"{source} is not a folder")
    target = _check_new_folder(name.strip() or source.name, user_dir, taken)
    source = source.resolve()
    if target.resolve().is_relative_to(source):
        raise ExtensionError(f"{source} contains the extensions folder; it cannot be copied into it")
    staging = _staging(user_dir, target.name)
    try:
        shutil.copytree(source, staging, symlinks=True)
        staging.rename(target)
    except OSError as e:
        raise ExtensionError(f"could not copy {source}: {e}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass(frozen=True)
class UpdateCheck:
    status: str  # "latest", "3 new commits", or why it could not be checked
    can_update: bool


def check_for_update(extension: Extension) -> UpdateCheck:
    """Fetch from the extension's remote and compare with its branch's upstream."""
    what = "could not check for updates"
    try:
        _git("fetch", "--quiet", cwd=extension.path, timeout=FETCH_TIMEOUT_S, what=what)
        behind = int(_git("rev-list", "--count", "HEAD..@{upstream}", cwd=extension.path,
                          timeout=LOCAL_GIT_TIMEOUT_S, what=f"{what} (no upstream branch)"))
    except ExtensionError as e:
        return UpdateCheck(f"unknown: {e}", False)
    if behind == 0:
        return UpdateCheck("latest", False)
    return UpdateCheck(f"{behind} new commit{'s' if behind > 1 else ''}", True)


def check_for_updates(extensions: Iterable[Extension],
                      check: Callable[[Extension], UpdateCheck] = check_for_update) -> dict[str, UpdateCheck]:
    """{name: check} for each git clone among `extensions`, a few at a time (a slow remote does not hold up
    the others)."""
    clones = [e for e in extensions if e.url]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip([e.name for e in clones], pool.map(check, clones)))


def update_extension(extension: Extension) -> None:
    """Fetch and fast-forward the extension's branch to its upstream; local changes are never thrown away
    (ExtensionError says so instead)."""
    what = f"could not update {extension.name}"
    _git("fetch", "--quiet", cwd=extension.path, timeout=FETCH_TIMEOUT_S, what=what)
    _git("merge", "--ff-only", "--quiet", "@{upstream}", cwd=extension.path, timeout=LOCAL_GIT_TIMEOUT_S, what=what)


def extension_statuses(extensions: Iterable[Extension], mode: str,
                       errors: Mapping[str, str]) -> dict[str, str]:
    """{name: "ok" | "disabled" | "off (...)" | "failed: error"} as the Extensions tab and the API show it."""
    statuses = {}
    for e in extensions:
        if e.name in errors:
            statuses[e.name] = f"failed: {errors[e.name]}"
        elif not e.enabled:
            statuses[e.name] = "disabled"
        elif is_switched_off(e, mode):
            statuses[e.name] = f'off ("Disable all extensions": {mode})'
        else:
            statuses[e.name] = "ok"
    return statuses


def active() -> list[Extension]:
    """A1111's: the extensions this program loaded at start."""
    from modules import shared_services
    return [e for e in shared_services.extensions() if shared_services.is_active(e.name)]


def __getattr__(name: str):
    if name == "extensions":  # A1111's list of every extension found at start
        from modules import shared_services
        return list(shared_services.extensions())
    raise AttributeError(f"module 'modules.extensions' has no attribute {name!r}")
