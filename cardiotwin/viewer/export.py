"""The review page, served (assets by URL) or exported (one self-contained HTML file).

Both modes use the same ``static/index.html``, ``viewer.js``, ``viewer.css`` and the vendored
three.js bundle; the export inlines them and the scene payload, so the file opens from disk with
no server and no network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from cardiotwin.io.atomic import write_text_atomic
from cardiotwin.viewer.scene import SceneOptions, build_scene

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
THREE_BUNDLE = "vendor/three.bundle.min.js"


def _script_safe(text: str) -> str:
    """JavaScript source that cannot close the <script> element it is inlined into."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def json_for_script(data: Any) -> str:
    """JSON for a ``<script type="application/json">`` element: still valid JSON, with every
    ``<``, ``>``, ``&`` and line separator written as a ``\\u`` escape, so that no value (a case id
    holding ``</script>`` or ``<!--``) can end the element or start a comment in it."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def render_page(*, scene: dict[str, Any] | None = None) -> str:
    """The HTML page. ``scene=None``: served mode (assets under ``static/``, the scene fetched
    from ``api/scene.json``); a scene dict: self-contained page with everything inlined."""
    template = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    if scene is None:
        head = '<link rel="stylesheet" href="static/viewer.css">'
        body = f'<script src="static/{THREE_BUNDLE}"></script>\n<script src="static/viewer.js"></script>'
    else:
        head = "<style>\n" + (STATIC_DIR / "viewer.css").read_text(encoding="utf-8") + "\n</style>"
        body = "\n".join([
            f'<script id="cardiotwin-scene" type="application/json">{json_for_script(scene)}</script>',
            "<script>" + _script_safe((STATIC_DIR / THREE_BUNDLE).read_text(encoding="utf-8")) + "</script>",
            "<script>" + _script_safe((STATIC_DIR / "viewer.js").read_text(encoding="utf-8")) + "</script>",
        ])
    return template.replace("<!--HEAD_ASSETS-->", head).replace("<!--BODY_ASSETS-->", body)


def export_review(case_root: str | Path, out_path: str | Path, *, opts: SceneOptions = SceneOptions()) -> Path:
    """Write the self-contained review page of a case to ``out_path`` (atomically)."""
    scene = build_scene(case_root, opts=opts)
    html = render_page(scene=scene)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, html)
    log.info("wrote %s (%.1f MB; %s)", out, len(html) / 1e6, ", ".join(scene["present"]) or "nothing to show")
    return out
