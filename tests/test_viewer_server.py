"""Review server over raw HTTP: it serves the case and refuses every path that leaves it.

Requests are written byte for byte on a socket so that nothing (client library, URL parser)
normalises the traversal attempts before the server sees them.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from test_viewer_scene import build_review_case

from cardiotwin.cases import pseudonym

SECRET = "top-secret-outside-the-case"


def raw_get(port: int, target: str, *, host: str = "127.0.0.1") -> tuple[int, bytes]:
    """Send ``GET <target> HTTP/1.1`` exactly as given; return (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.fixture(scope="module")
def case(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("server")
    (root / "secret.txt").write_text(SECRET)
    case = build_review_case(root / "p001", with_mesh=False)
    (case / "em").mkdir()
    (case / "em" / "escape.txt").symlink_to(root / "secret.txt")  # a symlink leading out of the case
    (case / "em" / "notes.txt").write_text("inside")
    return case


@pytest.fixture(scope="module")
def server(case: Path):
    from cardiotwin.viewer.app import start_background

    with start_background(case) as srv:
        yield srv


def test_serves_page_scene_assets_and_case_files(server, case: Path) -> None:
    status, body = raw_get(server.port, "/")
    assert status == 200 and b"cardiotwin review" in body
    status, body = raw_get(server.port, "/api/scene.json")
    assert status == 200 and json.loads(body)["case_id"] == pseudonym("p001")  # pseudonymised by default
    assert raw_get(server.port, "/static/vendor/three.bundle.min.js")[0] == 200
    status, body = raw_get(server.port, "/case/em/notes.txt")
    assert (status, body) == (200, b"inside")
    assert raw_get(server.port, "/case/manifest.json")[0] == 200
    assert raw_get(server.port, "/case/em/missing.txt")[0] == 404


@pytest.mark.parametrize("target", [
    "/case/../secret.txt", "/case/../../secret.txt", "/../secret.txt", "/static/../../../secret.txt",
    "/case/%2e%2e/secret.txt", "/case/%2E%2E/%2e%2e/secret.txt", "/case/..%2fsecret.txt", "/case/..%2Fsecret.txt",
    "/case/%252e%252e/secret.txt", "/case/%25252e%25252e%25252fsecret.txt", "/case/.%2e/secret.txt",
    "/case/..%5csecret.txt", "/case/em\\..\\..\\secret.txt", "/case/%2fetc%2fpasswd", "/case//etc/passwd",
    "//etc/passwd", "/case/em/escape.txt", "/case/.lock", "/case/%00secret.txt", "/static/%2e%2e/app.py",
])
def test_paths_leaving_the_case_are_refused(server, target: str) -> None:
    status, body = raw_get(server.port, target)
    assert status == 403, (target, status)
    assert SECRET.encode() not in body and b"root:" not in body


def test_absolute_form_request_is_not_a_proxy(server) -> None:
    status, body = raw_get(server.port, "http://127.0.0.1/etc/passwd")
    assert status in (400, 403, 404) and b"root:" not in body


def test_foreign_host_names_are_refused(server) -> None:
    # DNS rebinding: evil.example resolving to 127.0.0.1 must not let a web page read the case
    assert raw_get(server.port, "/case/manifest.json", host="evil.example")[0] == 403
    assert raw_get(server.port, "/api/scene.json", host=f"evil.example:{server.port}")[0] == 403
    for ok in (f"127.0.0.1:{server.port}", f"localhost:{server.port}", "localhost", f"[::1]:{server.port}"):
        assert raw_get(server.port, "/case/manifest.json", host=ok)[0] == 200, ok


def test_only_reads(server) -> None:
    req = urllib.request.Request(server.url + "case/em/notes.txt", data=b"x", method="PUT")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)
    assert err.value.code == 405


def test_cli_serves_on_the_requested_port_bound_to_localhost(case: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "cardiotwin", "-q", "view", str(case), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while True:
            try:
                status, body = raw_get(port, "/")
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError(f"server did not start: {proc.stdout.read().decode() if proc.poll() is not None else ''}")
                time.sleep(0.3)
        assert status == 200 and b"cardiotwin review" in body
        assert raw_get(port, "/case/%2e%2e/secret.txt")[0] == 403
        # bound to 127.0.0.1 only: the port is not open on the machine's other addresses
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=2).close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_cli_errors_name_the_case(tmp_path: Path, capsys) -> None:
    from cardiotwin.cli import main

    assert main(["view", str(tmp_path / "nope"), "--export", str(tmp_path / "x.html")]) != 0
    assert "not a case directory" in capsys.readouterr().err
