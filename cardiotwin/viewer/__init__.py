"""Browser review of a case for cardiologists: `cardiotwin view CASE` and its static export.

Stack, and why: a small aiohttp server (``app.py``) plus three.js rendering in the browser
(``static/viewer.js``), with three.js 0.187 bundled once from the npm registry into
``static/vendor/three.bundle.min.js`` (see ``static/vendor/README.md``; MIT licence).

- aiohttp and three.js are both widely used and maintained; aiohttp is already in the
  environment (trame's wslink depends on it), three.js is one vendored file, no CDN.
- The served page and the exported page are the *same* HTML/JS, fed the same scene payload
  (``scene.py``): served, it is fetched from ``/api/scene.json``; exported, it is inlined with
  the JS into one file. So the static export renders exactly like the app, which trame cannot
  give (its exports hold the 3D view only, not the panels or the candidate logic).
- A hand-written server makes path confinement explicit and testable with raw HTTP requests
  (``security.py``): trame serves its own asset tree through wslink routes we do not control.
- Scientific data stays in Python (numpy/scipy/scikit-image: surfaces, isochrones, AHA means);
  the browser only colours and draws, so the numbers are testable without a browser.

Modules: ``scene`` (case -> payload), ``geometry`` (surfaces, isochrones, fibre glyphs),
``therapy`` (lead candidates), ``deformation`` (displacement series), ``colors``,
``security`` (path confinement), ``app`` (server), ``export`` (page rendering, static export).
"""

from cardiotwin.viewer.export import export_review, render_page
from cardiotwin.viewer.scene import SceneOptions, build_scene, find_case_contents

__all__ = ["SceneOptions", "build_scene", "export_review", "find_case_contents", "render_page"]
