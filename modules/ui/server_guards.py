"""Guards around the page that Gradio leaves to the app mounting it (webui.create_server_app)."""
from __future__ import annotations

import re
from urllib.parse import urlsplit

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse


def add_bare_login_page(app: FastAPI, gradio_app: FastAPI) -> None:
    """Gradio's "/" embeds the description of the page's API (its endpoints and the controls' defaults, checkpoint
    names among them) in the login page too; this route in front of it leaves that out until the visitor logs in."""
    page_route = next(r for r in gradio_app.routes if isinstance(r, APIRoute) and r.path == "/")
    current_user = next(d.call for d in page_route.dependant.dependencies if d.name == "user")

    def page_or_login(request: Request, user: str | None = Depends(current_user), page: str = "",  # noqa: B008
                      deep_link: str = ""):
        response = page_route.endpoint(request=request, user=user, page=page, deep_link=deep_link)
        if user is not None:
            return response
        return HTMLResponse(response.template.render({**response.context, "gradio_api_info": {}}))

    app.add_api_route("/", page_or_login, methods=["GET", "HEAD"], include_in_schema=False)


class CrossOriginGuard:
    """Refuses POSTs to the page's Gradio routes (uploads, events) from web pages of other origins than the
    --cors-allow-origins ones. A browser sends another site's multipart upload without asking first (no CORS
    preflight), so CORS headers alone would only hide the answer from that site, not stop the upload."""

    def __init__(self, app, allowed_origins: list[str], allowed_origin_regex: str | None):
        self.app = app
        self.allowed_origins = set(allowed_origins)
        self.allowed_origin_regex = re.compile(allowed_origin_regex) if allowed_origin_regex else None

    def allowed(self, origin: str, host: str | None) -> bool:
        return (urlsplit(origin).netloc == host or origin in self.allowed_origins or "*" in self.allowed_origins
                or bool(self.allowed_origin_regex and self.allowed_origin_regex.fullmatch(origin)))

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"].startswith("/gradio_api/"):
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self.allowed(origin, headers.get("host")):
                response = PlainTextResponse(f"Requests from {origin} are not allowed (see --cors-allow-origins).",
                                             status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
