"""Local review server: one case, bound to 127.0.0.1 unless told otherwise.

Routes (GET only):

- ``/``                 the review page (``export.render_page`` in served mode);
- ``/api/scene.json``   the scene payload (built once when the server starts);
- ``/static/<path>``    the page's own assets (``cardiotwin/viewer/static``);
- ``/case/<path>``      raw files of the opened case, for download (e.g. ``em/pv_loops.png``).

Every request path is checked on the raw request target before routing
(``security.check_request_path``: ``..``, backslashes, NUL, ``//`` in any percent-encoded form
are refused with 403), and file routes resolve through ``security.resolve_inside`` (symlinks
followed, must stay inside the served folder; hidden entries refused). A request the file system
or a parser rejects otherwise gets 400, never a server error.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from cardiotwin.errors import CaseError
from cardiotwin.viewer.export import STATIC_DIR, render_page
from cardiotwin.viewer.scene import SceneOptions, build_scene
from cardiotwin.viewer.security import PathRefused, PathTooLong, check_request_path, resolve_inside

log = logging.getLogger(__name__)

_CASE_ROOT = web.AppKey("case_root", Path)
_SCENE_JSON = web.AppKey("scene_json", bytes)
_ALLOWED_HOSTS = web.AppKey("allowed_hosts", frozenset)
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    # The page needs inline data (blob/data textures) and nothing from any other origin.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
}


@web.middleware
async def _confine(request: web.Request,
                   handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        check_request_path(request.raw_path)
    except PathTooLong as exc:
        log.warning("refused %s...: %s", request.raw_path[:80], exc)
        return web.Response(status=414, text="refused: path too long\n")
    except PathRefused as exc:
        log.warning("refused %s: %s", request.raw_path[:200], exc)
        return web.Response(status=403, text="refused: path outside the case\n")
    if request.method not in ("GET", "HEAD"):
        return web.Response(status=405, text="read-only server\n")
    allowed = request.app[_ALLOWED_HOSTS]
    if allowed and _host_name(request.headers.get("Host", "")) not in allowed:
        # DNS rebinding: a web page elsewhere must not read the case through a name it controls.
        log.warning("refused Host %r", request.headers.get("Host"))
        return web.Response(status=403, text="refused: unexpected Host header\n")
    try:
        response = await handler(request)
    except web.HTTPException:
        raise
    except (OSError, ValueError, UnicodeError) as exc:  # a request the file system or a parser rejects
        log.warning("bad request %s: %s", request.raw_path[:200], exc)
        return web.Response(status=400, text="bad request\n", headers=_SECURITY_HEADERS)
    response.headers.update(_SECURITY_HEADERS)
    return response


def _host_name(host_header: str) -> str:
    """The host part of a Host header ("127.0.0.1:8765" -> "127.0.0.1", "[::1]:80" -> "[::1]")."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def _serve_file(root: Path, rel: str) -> web.StreamResponse:
    try:
        path = resolve_inside(root, rel)
    except PathRefused as exc:
        log.warning("refused %r: %s", rel, exc)
        return web.Response(status=403, text="refused: path outside the case\n")
    except (FileNotFoundError, NotADirectoryError, UnicodeDecodeError):
        return web.Response(status=404, text="not found\n")
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return web.Response(body=path.read_bytes(), content_type=ctype if "/" in ctype else "application/octet-stream")


async def _index(request: web.Request) -> web.Response:
    return web.Response(text=render_page(scene=None), content_type="text/html")


async def _scene(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_SCENE_JSON], content_type="application/json")


async def _static(request: web.Request) -> web.StreamResponse:
    return _serve_file(STATIC_DIR, request.match_info["path"])


async def _case_file(request: web.Request) -> web.StreamResponse:
    return _serve_file(request.app[_CASE_ROOT], request.match_info["path"])


def make_app(case_root: str | Path, *, opts: SceneOptions = SceneOptions(),
             host: str = "127.0.0.1") -> web.Application:
    """The aiohttp application for one case (the scene is built here, once).

    Bound to a loopback address, it answers only requests whose Host header names a loopback
    address (no DNS rebinding); bound elsewhere, the user has chosen to expose it.
    """
    root = Path(case_root).resolve()
    scene: dict[str, Any] = build_scene(root, opts=opts)
    app = web.Application(middlewares=[_confine])
    app[_CASE_ROOT] = root
    app[_SCENE_JSON] = json.dumps(scene, separators=(",", ":"), allow_nan=False).encode()
    app[_ALLOWED_HOSTS] = LOOPBACK_NAMES if host in LOOPBACK_NAMES else frozenset()
    app.router.add_get("/", _index)
    app.router.add_get("/api/scene.json", _scene)
    app.router.add_get("/static/{path:.+}", _static)
    app.router.add_get("/case/{path:.+}", _case_file)
    log.info("review of %s: %s", root, ", ".join(scene["present"]) or "nothing to show")
    return app


def serve(case_root: str | Path, *, host: str = "127.0.0.1", port: int = 8765,
          opts: SceneOptions = SceneOptions()) -> None:
    """Serve the review until interrupted (blocking)."""
    app = make_app(case_root, opts=opts, host=host)
    log.info("serving the review on http://%s:%d/ (Ctrl-C to stop)", host, port)
    web.run_app(app, host=host, port=port, print=None, handle_signals=True)


@dataclass
class RunningServer:
    """A server running on a background thread (tests, notebooks). ``stop()`` shuts it down."""

    url: str
    port: int
    _loop: asyncio.AbstractEventLoop
    _runner: web.AppRunner
    _thread: threading.Thread

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_background(case_root: str | Path, *, host: str = "127.0.0.1", port: int = 0,
                     opts: SceneOptions = SceneOptions()) -> RunningServer:
    """Start the review server on a thread; ``port=0`` picks a free port. Returns once listening."""
    if not Path(case_root).is_dir():
        raise CaseError(f"{case_root}: no such case directory")
    app = make_app(case_root, opts=opts, host=host)
    # The loop lives on its own thread (set up there too), so callers that run an event loop of
    # their own on this thread (Playwright's sync API, notebooks) are not disturbed.
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    ready = threading.Event()
    started: dict[str, Any] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, host=host, port=port)
            loop.run_until_complete(site.start())
            started["port"] = int(runner.addresses[0][1])
        except BaseException as exc:  # reported to the caller below
            started["error"] = exc
            ready.set()
            return
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="cardiotwin-review", daemon=True)
    thread.start()
    ready.wait(timeout=60)
    if "error" in started or "port" not in started:
        raise CaseError(f"{case_root}: review server did not start ({started.get('error', 'timeout')})")
    bound_port = started["port"]
    return RunningServer(url=f"http://{host}:{bound_port}/", port=bound_port, _loop=loop, _runner=runner,
                         _thread=thread)
