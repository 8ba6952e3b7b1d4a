"""`cardiotwin export-fhir`: a case's numbers as a valid FHIR R4 transaction Bundle, posted to a server.

The receiving server here is a small HTTP endpoint in the test (no FHIR server can be installed on the
test machines) that checks the bearer token, validates the posted Bundle with the FHIR models and
answers with a transaction-response, as a FHIR server does.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml

from cardiotwin.cli import main
from cardiotwin.io import fhir


@pytest.fixture(scope="module")
def segmented_case(small_ct_phantom, tmp_path_factory):
    """A case whose segment stage holds the phantom's reference labels (no report, no CRT)."""
    from cardiotwin.io.scans import write_labels, write_scan
    from cardiotwin.pipeline import load_recipe, run_pipeline

    root = tmp_path_factory.mktemp("fhircase")
    scan = write_scan(small_ct_phantom.scan, root / "scan.nii.gz")
    labels = write_labels(small_ct_phantom.labels, root / "labels.nii.gz")
    recipe = root / "seg.yaml"
    recipe.write_text(yaml.safe_dump({"name": "seg", "stages": [{"segment": {}}]}))
    run_pipeline(load_recipe(recipe), scan_path=scan, out=root / "case", labels_path=labels, workers=0)
    return root / "case"


class _Receiver(BaseHTTPRequestHandler):
    posted: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Authorization") != "Bearer fhir-token-1":
            self.send_response(401)
            self.end_headers()
            return
        data = json.loads(body)
        fhir.validate_bundle(data, "posted bundle")
        type(self).posted.append(data)
        answer = {"resourceType": "Bundle", "type": "transaction-response", "entry": [
            {"response": {"status": "201 Created", "location": f"{e['resource']['resourceType']}/{i}/_history/1"}}
            for i, e in enumerate(data["entry"])]}
        out = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Receiver.posted = []
    yield f"http://127.0.0.1:{server.server_address[1]}/fhir", _Receiver.posted
    server.shutdown()
    server.server_close()


def test_export_posts_a_valid_transaction(segmented_case, receiver, tmp_path, monkeypatch, capsys):
    from cardiotwin.interop.results import key_numbers

    url, posted = receiver
    out = tmp_path / "bundle.json"
    monkeypatch.setenv("CARDIOTWIN_FHIR_TOKEN", "fhir-token-1")
    assert main(["export-fhir", str(segmented_case), "--out", str(out), "--fhir-server", url]) == 0
    data = json.loads(out.read_text())
    assert posted == [data] and data["type"] == "transaction"
    printed = capsys.readouterr().out
    assert "created DiagnosticReport/0/_history/1" in printed
    report = data["entry"][0]["resource"]
    assert report["resourceType"] == "DiagnosticReport" and "presentedForm" not in report  # no report stage yet
    assert "No CRT lead recommendation" in report["conclusion"]
    numbers = key_numbers(segmented_case)
    values = sorted((e["resource"]["code"]["coding"][0]["code"], e["resource"]["valueQuantity"]["value"])
                    for e in data["entry"][1:])
    assert values == sorted((n.code[1], round(n.value, 6)) for n in numbers.numbers())
    assert all(e["request"] == {"method": "POST", "url": e["resource"]["resourceType"]} for e in data["entry"])


def test_export_errors(segmented_case, receiver, tmp_path, monkeypatch, capsys):
    url, posted = receiver
    monkeypatch.setenv("CARDIOTWIN_FHIR_TOKEN", "not-the-token")
    assert main(["export-fhir", str(segmented_case), "--out", str(tmp_path / "b.json"), "--fhir-server", url]) != 0
    err = capsys.readouterr().err
    assert "refused access (HTTP 401" in err and "not-the-token" not in err
    assert not posted
    empty = tmp_path / "empty"
    assert main(["case", "new", str(empty), "--scan", "sample_scans/ct_sample.nii.gz"]) == 0
    assert main(["export-fhir", str(empty), "--out", str(tmp_path / "c.json")]) != 0
    assert "nothing to export" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()
