"""HTML (self-contained, images inlined) and PDF (WeasyPrint) rendering of report sections.

Templates are Jinja2 with autoescaping on: every string from a case, a YAML file or a DICOM
header is escaped, so a case called ``<script>...`` renders as text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from cardiotwin.io.atomic import atomic_path, write_text_atomic
from cardiotwin.report.context import Section

log = logging.getLogger(__name__)

_CSS = """
@page { size: A4; margin: 14mm 12mm; @bottom-right { content: counter(page) " / " counter(pages); font-size: 8pt; } }
body { font-family: "DejaVu Sans", Helvetica, Arial, sans-serif; font-size: 9.5pt; color: #111; max-width: 1100px; margin: auto; }
h1 { font-size: 16pt; margin-bottom: 2pt; } h2 { font-size: 12.5pt; border-bottom: 1px solid #999; margin-top: 14pt; }
.meta { color: #444; font-size: 8.5pt; }
table { border-collapse: collapse; margin: 4pt 0 8pt 0; font-size: 8pt; width: 100%; }
th, td { border: 1px solid #bbb; padding: 2pt 4pt; text-align: left; vertical-align: top; overflow-wrap: anywhere; }
th { background: #eef; } caption { caption-side: bottom; font-size: 7.5pt; color: #555; text-align: left; }
.missing { background: #fff3cd; border-left: 4px solid #d39e00; padding: 4pt 6pt; margin: 4pt 0; }
pre { font-size: 7.5pt; background: #f6f6f6; padding: 6pt; white-space: pre-wrap; }
figure { margin: 6pt 0; page-break-inside: avoid; } figure img { max-width: 100%; max-height: 150mm; }
figcaption { font-size: 7.5pt; color: #444; }
.status-complete { color: #176117; } .status-partial, .status-missing { color: #9a6700; }
.toc li { margin: 0; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="cardiotwin {{ version }}">
<title>{{ title }}</title>
<style>{{ css|safe }}</style></head>
<body>
<h1>{{ title }}</h1>
<p class="meta">{{ subtitle }}</p>
{% if toc %}<ul class="toc">{% for s in sections %}<li><a href="#{{ s.id }}">{{ s.title }}</a>
 <span class="status-{{ s.status }}">({{ s.status }})</span></li>{% endfor %}</ul>{% endif %}
{% for s in sections %}
<section id="{{ s.id }}" data-status="{{ s.status }}"><h2>{{ s.title }}</h2>
{% for b in s.blocks %}
{% if b.kind == "p" %}<p>{{ b.text }}</p>
{% elif b.kind == "missing" %}<p class="missing" data-missing="1">Not available: {{ b.text }}</p>
{% elif b.kind == "pre" %}<pre>{{ b.text }}</pre>
{% elif b.kind == "table" %}<table>{% if b.caption %}<caption>{{ b.caption }}</caption>{% endif %}
<thead><tr>{% for c in b.columns %}<th>{{ c }}</th>{% endfor %}</tr></thead>
<tbody>{% for r in b.rows %}<tr>{% for c in r %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
{% elif b.kind == "figure" %}<figure data-figure="{{ b.name }}"><img alt="{{ b.caption }}" src="{{ b.src }}">
<figcaption>{{ b.caption }}</figcaption></figure>
{% endif %}{% endfor %}
</section>
{% endfor %}
</body></html>
"""


def render_html(*, title: str, subtitle: str, sections: list[Section], toc: bool) -> str:
    """The page as one self-contained HTML string (images are data URIs)."""
    import jinja2

    from cardiotwin import __version__

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_PAGE).render(
        title=title, subtitle=subtitle, sections=sections, toc=toc, version=__version__,
        css=_CSS)


def write_html(path: Path, html: str) -> Path:
    write_text_atomic(path, html)
    return path


def write_pdf(path: Path, html: str) -> Path:
    """Render HTML to PDF with WeasyPrint (no network access: only data URIs are referenced)."""
    # WeasyPrint logs every layout step at INFO (from its import on); keep the user's log to ours.
    for name in ("weasyprint", "weasyprint.progress", "fontTools"):
        logging.getLogger(name).setLevel(logging.WARNING)
    import weasyprint

    # The HTML references nothing but data: URIs (all input text is escaped), so no fetch leaves the machine.
    with atomic_path(path) as tmp:
        weasyprint.HTML(string=html, base_url=None).write_pdf(tmp)
    return path
