"""Leaks, escapes and malformed HTTP requests: the case folder's name never appears in the default
(pseudonymised) outputs, data embedded in the review page cannot break out of its element, and
the review server answers every malformed request with a 4xx."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest
from robustness_support import small_scan

from cardiotwin.cases import Case, pseudonym, redact
from cardiotwin.cli import main
from cardiotwin.io.scans import write_scan

PATIENT = "Doe_John_1960"


def _files_text(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file()}


def test_report_and_review_export_are_pseudonymised(tmp_path, monkeypatch):
    import cardiotwin.report.build as build

    # The PDFs are rendered from the same HTML text (weasyprint, seconds each): keep that text.
    monkeypatch.setattr(build, "write_pdf", lambda path, html: Path(path).write_text(html, encoding="utf-8"))
    scan = write_scan(small_scan(), tmp_path / "scan.nii.gz")
    case = tmp_path / PATIENT
    assert main(["-q", "case", "new", str(case), "--scan", str(scan)]) == 0
    assert main(["-q", "report", str(case), "--no-verify", "--no-calc-verification"]) == 0
    assert main(["-q", "view", str(case), "--export", str(case / "review.html")]) == 0
    outputs = {**{f"report/{k}": v for k, v in _files_text(case / "report").items()},
               "review.html": (case / "review.html").read_text(encoding="utf-8")}
    assert set(outputs) >= {"report/evidence.html", "report/summary.html", "report/report.json", "review.html"}
    for name, text in outputs.items():
        assert PATIENT not in text, f"{name} names the case folder"
    assert "case " + pseudonym(PATIENT) in outputs["report/evidence.html"]
    # identifiers on request
    assert main(["-q", "view", str(case), "--export", str(tmp_path / "named.html"), "--include-identifiers"]) == 0
    assert PATIENT in (tmp_path / "named.html").read_text(encoding="utf-8")


def test_failure_notes_in_the_case_are_pseudonymised(tmp_path, monkeypatch):
    import cardiotwin.segmentation.inference as inference
    from cardiotwin.errors import StageError

    def fail(scan, model, cfg):
        raise StageError(f"no heart found in {tmp_path / PATIENT}/inputs")

    monkeypatch.setattr(inference, "segment", fail)
    scan = write_scan(small_scan(), tmp_path / "scan.nii.gz")
    assert main(["-q", "segment", str(scan), "--out", str(tmp_path / PATIENT)]) == 2
    notes = (tmp_path / PATIENT / ".attempts.json").read_text()
    assert PATIENT not in notes and "no heart found" in notes


def test_redact_whole_words_and_html_forms(tmp_path):
    case = Case.create(tmp_path / "Doe&Sons")
    text = f"{case.root}/x Doe&Sons, Doe&amp;Sons; Doe&Sons2 stays"
    out = redact(text, case)
    tag = "case " + pseudonym("Doe&Sons")
    assert out == f"{tag}/x {tag}, {tag}; Doe&Sons2 stays"
    assert redact({"k": [str(case.root)]}, case) == {"k": [tag]}


HOSTILE_IDS = ["<!--", "</script><script>alert(1)</script>", "a<!--b-->c", "x</SCRIPT >", "\u2028&amp;<>'\""]


@pytest.mark.parametrize("case_id", HOSTILE_IDS)
def test_review_export_escapes_the_case_id(tmp_path, case_id):
    from cardiotwin.viewer.export import render_page

    page = render_page(scene={"case_id": case_id, "present": []})
    m = re.search(r'<script id="cardiotwin-scene" type="application/json">(.*?)</script>', page, re.S | re.I)
    assert m, "the scene element must end at its own </script>"
    payload = m.group(1)
    assert "<" not in payload and ">" not in payload and "&" not in payload  # nothing the HTML parser acts on
    assert json.loads(payload)["case_id"] == case_id  # and it is still valid JSON, the id intact


@pytest.mark.parametrize("case_id", HOSTILE_IDS[:2])
def test_exported_page_with_hostile_case_id(tmp_path, capsys, case_id):
    case = Case.create(tmp_path / "case", case_id=case_id)
    out = tmp_path / "review.html"
    assert main(["-q", "view", str(case.root), "--export", str(out), "--include-identifiers"]) == 0
    page = out.read_text()
    m = re.search(r'<script id="cardiotwin-scene" type="application/json">(.*?)</script>', page, re.S)
    assert json.loads(m.group(1))["case_id"] == case_id
    assert page.count("<!--") == open_comments_in_template()


def open_comments_in_template() -> int:
    from cardiotwin.viewer.export import render_page

    return render_page(scene={"case_id": "plain", "present": []}).count("<!--")


# -- the review server: 4xx for any malformed request -------------------------------------------


def _raw(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1])


def _get(port: int, target: str, host: str = "127.0.0.1") -> int:
    return _raw(port, f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from cardiotwin.viewer.app import start_background

    root = tmp_path_factory.mktemp("srv") / "case"
    case = Case.create(root)
    (root / "em").mkdir()
    (root / "em" / "notes.txt").write_text("inside")
    with start_background(case.root) as srv:
        yield srv


MALFORMED = [
    "/case/" + "a" * 300,  # the sweep's probe: HTTP 500 before
    "/static/" + "b" * 300,
    "/case/em/" + "c" * 256 + "/x",
    "/case/" + "/".join(["d" * 200] * 8),
    "/" + "e" * 300,
    "/case/%ff%fe",
    "/case/em/%00notes.txt",
    "/case/%2e%2e/%2e%2e/etc/passwd",
    "/case/%25252e%25252e/x",
    "/case/em/notes.txt%",
    "/case/.lock",
    "/case/manifest.json/x",
    "/api/scene.json/../../x",
    "//etc/passwd",
    "/case/C:/Windows",
    "/case/em\\notes.txt",
]


@pytest.mark.parametrize("target", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_request_paths_get_4xx(server, target):
    status = _get(server.port, target)
    assert 400 <= status < 500, (target[:80], status)


def test_malformed_requests_get_4xx(server):
    port = server.port
    assert 400 <= _get(port, "/", host="evil.example") < 500
    assert 400 <= _raw(port, b"POST /case/em/notes.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 2\r\n"
                             b"Connection: close\r\n\r\nhi") < 500
    assert 400 <= _raw(port, b"GET /" + b"f" * 20000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") < 500
    assert 400 <= _raw(port, b"GET /\xff\xfe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n") < 500
    assert 400 <= _raw(port, b"GARBAGE\r\n\r\n") < 500
    assert _get(port, "/case/em/notes.txt") == 200  # and the real file is still served
