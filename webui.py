"""Start the web UI: python webui.py [A1111-style flags]."""
from __future__ import annotations

import os

# Nothing may reach a model hub or analytics server, whatever the user's environment says.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"

import logging  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

from modules.cmd_args import parse_args, serves_beyond_this_computer  # noqa: E402

log = logging.getLogger("webui")

LOCAL_HOST_NAMES = ["127.0.0.1", "localhost"]  # the Host headers of a page served to this computer only


@dataclass
class WebUI:
    """What main() serves: the page (None with --nowebui), the worker behind it and the API's services, and what
    the active extensions add to the page (their scripts and styles)."""
    demo: object | None
    worker: object
    api: object
    page_scripts: str = ""
    page_css: str = ""


def install_stamps_file(paths):
    """Which extensions' install.py ran, and for which version of it."""
    from modules.extensions import INSTALL_STAMPS
    return paths.data_dir / "extensions" / INSTALL_STAMPS


def restart_program() -> None:
    """The Extensions tab's "Apply and restart UI": this program starts again with the same command line, once the
    answer has gone out (the page waits for the new server and reloads itself)."""
    import threading

    def again():
        log.info("Restarting: %s %s", sys.executable, " ".join(sys.argv))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, *sys.argv])  # noqa: S606 - this program itself, as it was started
    threading.Timer(0.5, again).start()


def start_extensions(args, paths, services):
    """Find the extensions, run the install.py of new or changed ones, load the scripts of the active ones and of
    scripts/, and bind A1111's `modules.shared` to this program. Returns (script host, active extensions, every
    extension found, {extension name: install.py's error})."""
    from modules import extensions, gradio_compat, script_callbacks, scripts, shared, shared_services
    from modules.paths import REPO_ROOT

    shared.bind(services, args)
    gradio_compat.install()
    found = extensions.discover(REPO_ROOT / "extensions-builtin", paths.data_dir / "extensions", services.options)
    errors = extensions.run_installers(extensions.active_extensions(found, services.options, args),
                                       install_stamps_file(paths))
    active = extensions.active_extensions(found, services.options, args, failed=errors)
    host = scripts.initialize(active)
    shared_services.set_extensions(found, [e.name for e in active if e.name not in scripts.load_errors])
    script_callbacks.ui_settings_callback()  # extensions declare their settings before the page is built
    script_callbacks.before_ui_callback()  # e.g. extensions add their X/Y/Z plot axes here
    from modules.sd_models import ModelView
    services.models.on_loaded.append(lambda model: script_callbacks.model_loaded_callback(ModelView(model)))
    if services.models.current is not None:  # loaded before the extensions were: they hear of it now
        script_callbacks.model_loaded_callback(ModelView(services.models.current))
    return host, active, found, errors


def extension_page_parts(active) -> tuple[str, str]:
    """The active extensions' javascript/*.js as <script> elements and their style.css files, for the page."""
    scripts, styles = [], []
    for extension in active:
        for path in extension.javascript:
            code = path.read_text(encoding="utf-8", errors="replace").replace("</script", "<\\/script")
            scripts.append(f"<script>/* {extension.name}: {path.name} */\n{code}\n</script>\n")
        if extension.style is not None:
            css = extension.style.read_text(encoding="utf-8", errors="replace").replace("</style", "<\\/style")
            styles.append(f"/* {extension.name} */\n{css}\n")
    return "".join(scripts), "".join(styles)


def build_app(args) -> WebUI:
    """Everything but the server: settings, device policy, models, the generation worker and the page."""
    from modules.api.routes import ApiServices
    from modules.generation.services import build_services
    from modules.models.devices import policy_from_args
    from modules.paths import Paths

    paths = Paths.from_args(args)
    paths.ensure()
    policy = policy_from_args(args)
    log.info("device: %s", policy.describe())
    if policy.is_cpu and not (args.use_cpu or args.skip_torch_cuda_test):
        log.warning("No CUDA GPU found: running on the CPU, which is much slower. "
                    "(--skip-torch-cuda-test hides this note.)")
    services = build_services(paths, policy, allow_unsafe_pickle=args.disable_safe_unpickle,
                              styles_file=Path(args.styles_file) if args.styles_file else None)
    services.load_initial_checkpoint(args.ckpt)
    host, active, found, install_errors = start_extensions(args, paths, services)
    from modules import scripts, shared

    def extension_list() -> list[dict]:
        on = {e.name for e in active}
        return [{"name": e.name, "remote": e.url, "branch": e.branch, "commit_hash": e.commit, "version": e.commit,
                 "commit_date": e.modified, "enabled": e.name in on and e.name not in scripts.load_errors}
                for e in found]
    api = ApiServices(worker=services.worker, save_settings=services.save_settings, cmd_flags=vars(args),
                      frozen_settings=args.freeze_settings, hide_dir_settings=args.hide_ui_dir_config,
                      scripts=host, list_extensions=extension_list, extension_settings=shared.extension_settings)
    demo = None
    page_scripts, page_css = extension_page_parts(active)
    if args.nowebui:
        host.lay_out_without_page()  # the scripts' argument places and defaults, once, before requests come
    else:
        from modules import script_callbacks
        from modules.ui.app import create_ui
        from modules.ui.extensions import ExtensionsTab

        def extension_errors() -> dict[str, str]:
            """Why an extension is not loaded, or what went wrong in its scripts since the start."""
            running = {name: f"while running: {error}" for name, error in scripts.hook_errors.items()}
            return {**running, **getattr(args, "extension_preload_errors", {}), **scripts.load_errors}
        extensions_tab = ExtensionsTab(paths.data_dir / "extensions", services.options, services.save_settings,
                                       restart_program, args, load_errors=extension_errors,
                                       install_errors=install_errors, stamps_file=install_stamps_file(paths))
        demo = create_ui(services.models, services.worker, save_settings=services.save_settings,
                         show_dir_fields=not args.hide_ui_dir_config, freeze_settings=args.freeze_settings,
                         ui_config_file=paths.ui_config_file, extensions_dir=paths.data_dir / "extensions",
                         scripts=host, extension_tabs=script_callbacks.ui_tabs_callback,
                         extension_settings=shared.extension_settings, extensions_tab=extensions_tab)
        shared.demo = demo
    return WebUI(demo, services.worker, api, page_scripts, page_css)


def parse_auth(args) -> list[tuple[str, str]] | None:
    """--gradio-auth "u:p,u2:p2" and --gradio-auth-path FILE (lines or commas) -> [(user, password)]."""
    entries = []
    if args.gradio_auth:
        entries += args.gradio_auth.split(",")
    if args.gradio_auth_path:
        with open(args.gradio_auth_path, encoding="utf-8") as f:
            entries += [e for line in f for e in line.strip().split(",")]
    pairs = []
    for entry in (e.strip() for e in entries):
        if not entry:
            continue
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise SystemExit(f"--gradio-auth: expected USER:PASSWORD, got {entry!r}")
        pairs.append((user, password))
    return pairs or None


def theme_head(theme: str | None) -> str:
    """Gradio picks light/dark from the URL's __theme; force it when --theme is given."""
    if not theme:
        return ""
    return ("<script>(() => { const u = new URL(location.href);"
            f" if (u.searchParams.get('__theme') !== '{theme}') {{ u.searchParams.set('__theme', '{theme}');"
            " location.replace(u.href); } })();</script>")


def share_possible() -> bool:
    """Gradio's share tunnel needs its frpc program; we never download it (nothing is fetched at run time)."""

    import gradio.tunneling
    if Path(gradio.tunneling.BINARY_PATH).is_file():
        return True
    log.warning("--share: no public link, because Gradio's tunnel program is not installed at %s and this program "
                "downloads nothing. Serving on your computer (and LAN with --listen) only.",
                gradio.tunneling.BINARY_PATH)
    return False


def create_server_app(args, webui: WebUI, auth: list[tuple[str, str]] | None):
    """Our FastAPI app: CORS as the flags say, the /sdapi/v1 API (--api, --nowebui) and the page mounted at /."""
    from fastapi import FastAPI
    from fastapi.middleware.cors import CORSMiddleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    from modules.api.routes import create_router, install_docs, install_error_handler
    from modules.cmd_args import serves_beyond_this_computer
    from modules.generation import VERSION
    from modules.ui.server_guards import CrossOriginGuard

    api_on = args.api or args.nowebui
    app = FastAPI(title="Stable Diffusion web UI API", version=VERSION, docs_url=None, redoc_url=None,
                  openapi_url=None)
    origins = [o.strip() for o in (args.cors_allow_origins or "").split(",") if o.strip()]
    if origins or args.cors_allow_origins_regex:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_origin_regex=args.cors_allow_origins_regex,
                           allow_methods=["*"], allow_headers=["*"], allow_credentials=True)
    app.add_middleware(CrossOriginGuard, allowed_origins=origins, allowed_origin_regex=args.cors_allow_origins_regex)
    if not serves_beyond_this_computer(args):
        # Served to this computer only: refuse requests for any other host name, so that a web page whose
        # domain an attacker re-points at 127.0.0.1 (DNS rebinding) cannot talk to this server.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=LOCAL_HOST_NAMES)
    if api_on:
        api_credentials = parse_api_auth(args.api_auth) or auth  # never leave the API open when the page is not
        app.include_router(create_router(webui.api, api_credentials))
        install_docs(app, api_credentials)
        install_error_handler(app)
    if webui.demo is not None:
        import gradio as gr
        from fastapi.routing import APIRoute
        from starlette.routing import Mount

        from modules.ui.app import CSS, page_head
        from modules.ui.networks import PREVIEW_ROUTE
        from modules.ui.server_guards import add_bare_login_page
        webui.demo.queue(default_concurrency_limit=1)
        theme = getattr(webui.demo, "gradio_theme", "Default")  # the "Gradio theme" setting, as the program starts
        app = gr.mount_gradio_app(app, webui.demo, path="", auth=auth, show_error=True, css=CSS + webui.page_css,
                                  theme=None if theme == "Default" else getattr(gr.themes, theme)(),
                                  head=page_head() + webui.page_scripts + theme_head(args.theme), ssr_mode=False,
                                  max_file_size=args.max_upload_size, run_history=False,
                                  allowed_paths=[str(f) for f in webui.demo.download_folders])
        # Gradio lets an event's file values (gallery items, images, uploads) name only files in its upload folder,
        # but only once the app counts as launched, which launch() sets and mounting never does. Without it a
        # client could name any file of this computer, e.g. {"path": "/home/me/secret.png"} as a gallery item.
        webui.demo.has_launched = True
        # The cards' preview pictures are guarded as the page's /config is, by Gradio's login check: with
        # --gradio-auth a browser logged in to the page gets them without a second password prompt, anyone else
        # gets 401. That check exists once the page is mounted; the route then goes in front of the page, which is
        # mounted at "/" and would take every path routed after it.
        page = app.router.routes.pop()
        assert isinstance(page, Mount) and page.path == "", "Gradio's mount is expected to be the last route"
        page_config = next(r for r in page.app.routes if isinstance(r, APIRoute) and r.path == "/config")
        app.add_api_route(f"/{PREVIEW_ROUTE}/{{preview_id}}", webui.demo.extra_network_previews.response,
                          methods=["GET"], dependencies=page_config.dependencies, include_in_schema=False)
        app.add_api_route("/notification.mp3", notification_sound, methods=["GET"],
                          dependencies=page_config.dependencies, include_in_schema=False)
        if auth:
            add_bare_login_page(app, page.app)
        app.router.routes.append(page)
    from modules import script_callbacks
    script_callbacks.app_started_callback(webui.demo, app)  # extensions add their routes (in front of the page)
    _page_mount_last(app)
    return app


def _page_mount_last(app) -> None:
    """The page is mounted at "/" and takes every path routed after it: routes extensions added go before it."""
    from starlette.routing import Mount
    pages = [r for r in app.router.routes if isinstance(r, Mount) and r.path == ""]
    for page in pages:
        app.router.routes.remove(page)
        app.router.routes.append(page)



def notification_sound():
    """The sound the page plays when a generation ends, if the user put notification.mp3 beside webui.py (as in
    A1111); this one file only."""
    from starlette.responses import FileResponse, Response

    from modules.paths import REPO_ROOT
    path = REPO_ROOT / "notification.mp3"
    if not path.is_file():
        return Response(status_code=404)
    return FileResponse(path, media_type="audio/mpeg")


def parse_api_auth(value: str | None) -> list[tuple[str, str]] | None:
    """--api-auth "u:p,u2:p2"."""
    if not value:
        return None
    pairs = []
    for entry in filter(None, (e.strip() for e in value.split(","))):
        user, sep, password = entry.partition(":")
        if not sep or not user:
            raise SystemExit(f"--api-auth: expected USER:PASSWORD, got {entry!r}")
        pairs.append((user, password))
    return pairs or None


def port_in_use(host: str, port: int) -> OSError | None:
    """Why the server could not bind, found before starting it (uvicorn would just exit)."""
    import socket
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: TIME_WAIT is no conflict
        try:
            s.bind((host, port))
        except OSError as e:
            return e
    return None


def start_share_tunnel(port: int) -> None:
    """--share: Gradio's public link, when its tunnel program is there (we never download it)."""
    import secrets

    from gradio.networking import setup_tunnel
    try:
        url = setup_tunnel("127.0.0.1", port, secrets.token_urlsafe(32), None, None)
        print(f"Running on public URL: {url}", flush=True)
    except Exception as e:  # no internet, blocked, server down: the local UI goes on
        log.warning("--share: could not make a public link (%s). Serving locally only.", e)


def serve(app, host: str, port: int, args, api=None) -> None:
    """Run the server until Ctrl+C, or until an API client stops it (`api`: the API's services, given the means)."""
    import threading
    import webbrowser

    import uvicorn

    scheme = "https" if args.tls_certfile and args.tls_keyfile else "http"
    shown = f"{scheme}://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}"

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if not self.started:
                return
            what = "API" if args.nowebui else "page"
            print(f"Running on local URL:  {shown}  ({what}{'; API at /sdapi/v1, docs at /docs' if args.api else ''})",
                  flush=True)
            if host == "0.0.0.0":
                print(f"Listening on all network interfaces, port {port}: use this computer's LAN address.", flush=True)
            if args.share and share_possible():
                threading.Thread(target=start_share_tunnel, args=(port,), daemon=True).start()
            if args.autolaunch and not args.nowebui:
                webbrowser.open(shown)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning", ssl_keyfile=args.tls_keyfile,
                            ssl_certfile=args.tls_certfile, timeout_graceful_shutdown=2)
    server = Server(config)
    if api is not None:  # --api-server-stop: server-stop ends serving as Ctrl+C does; server-kill ends the program
        api.stop_server = lambda: setattr(server, "should_exit", True)
        api.kill_server = lambda: threading.Timer(0.2, os._exit, args=(0,)).start()  # once the answer is out
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn has shut down cleanly and passes Ctrl+C on
        print("Stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    args = parse_args(argv)
    if serves_beyond_this_computer(args) and not args.enable_insecure_extension_access:
        log.info("Others may reach this server: the page's folder fields are hidden and folders cannot be used from "
                 "it (--enable-insecure-extension-access allows them).")
    auth = parse_auth(args)
    parse_api_auth(args.api_auth)  # a malformed value stops here, before models load
    host = args.server_name or ("0.0.0.0" if args.listen else "127.0.0.1")
    port = args.port or (7861 if args.nowebui else 7860)
    busy = port_in_use(host, port)
    if busy:
        print(f"Cannot serve on {host}:{port}: {busy.strerror or busy}. Is another program using the port? "
              f"Start with --port to choose another.", file=sys.stderr)
        return 1
    webui = build_app(args)
    serve(create_server_app(args, webui, auth), host, port, args, api=webui.api)
    return 0


if __name__ == "__main__":
    sys.exit(main())
