"""PACS / FHIR server credentials: from the environment or a file only, never in a URL, never shown."""

from __future__ import annotations

import logging

import pytest
import requests

from cardiotwin.errors import ConfigError
from cardiotwin.interop import connection


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for kind in ("DICOMWEB", "FHIR"):
        for name in ("TOKEN", "TOKEN_FILE", "USER", "PASSWORD", "PASSWORD_FILE"):
            monkeypatch.delenv(f"CARDIOTWIN_{kind}_{name}", raising=False)


def _prepared(kind: str) -> requests.PreparedRequest:
    req = requests.Request("GET", "http://pacs.example/dicom-web/studies")
    s = connection.session(kind)
    return s.prepare_request(req)


def test_bearer_token_from_a_file_is_sent_and_never_shown(tmp_path, monkeypatch, caplog):
    token_file = tmp_path / "token"
    token_file.write_text("eyJ-secret-token\n")
    monkeypatch.setenv("CARDIOTWIN_DICOMWEB_TOKEN_FILE", str(token_file))
    caplog.set_level(logging.DEBUG)
    prepared = _prepared("dicomweb")
    assert prepared.headers["Authorization"] == "Bearer eyJ-secret-token"
    auth = connection.auth("dicomweb")
    assert "eyJ" not in repr(auth) and "eyJ" not in str(auth)
    assert "eyJ" not in caplog.text
    assert "Authorization" not in _prepared("fhir").headers  # each server has its own credentials


def test_basic_auth_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CARDIOTWIN_FHIR_USER", "clinician")
    pw = tmp_path / "pw"
    pw.write_text("s3cret")
    monkeypatch.setenv("CARDIOTWIN_FHIR_PASSWORD_FILE", str(pw))
    assert _prepared("fhir").headers["Authorization"] == requests.auth._basic_auth_str("clinician", "s3cret")


@pytest.mark.parametrize(("env", "words"), [
    ({"CARDIOTWIN_DICOMWEB_TOKEN": "a", "CARDIOTWIN_DICOMWEB_USER": "u"}, "both a token"),
    ({"CARDIOTWIN_DICOMWEB_USER": "u"}, "needs both CARDIOTWIN_DICOMWEB_USER and CARDIOTWIN_DICOMWEB_PASSWORD"),
    ({"CARDIOTWIN_DICOMWEB_TOKEN": "a", "CARDIOTWIN_DICOMWEB_TOKEN_FILE": "/x"}, "set one of them"),
    ({"CARDIOTWIN_DICOMWEB_TOKEN_FILE": "/nonexistent/token"}, "/nonexistent/token (from CARDIOTWIN_DICOMWEB_TOKEN_FILE)"),
])
def test_inconsistent_credentials_are_refused(monkeypatch, env, words):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        connection.auth("dicomweb")


def test_urls_with_credentials_or_other_schemes_are_refused():
    with pytest.raises(ConfigError) as exc:
        connection.check_url("http://admin:hunter2@pacs:8042/dicom-web", "dicomweb")
    assert "hunter2" not in str(exc.value) and "credentials in the URL are refused" in str(exc.value)
    with pytest.raises(ConfigError, match="must start with http"):
        connection.check_url("ftp://pacs/dicom-web", "dicomweb")
    assert connection.check_url("https://pacs.example:443/dicom-web/", "dicomweb") == "https://pacs.example:443/dicom-web"


def test_dicomweb_argument_errors(tmp_path, capsys):
    from cardiotwin.cli import main

    for argv, words in [
        (["segment", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--study", "1.2.3", "--out",
          str(tmp_path / "labels.nii.gz")], "the output must be a case folder"),
        (["run", "pipelines/crt_ct.yaml", "--study", "1.2.3", "--out", str(tmp_path / "c")],
         "--study and --series need --dicomweb"),
        (["run", "pipelines/crt_ct.yaml", "--dicomweb", "http://127.0.0.1:9/dicom-web", "--out", str(tmp_path / "c")],
         "--dicomweb needs --study"),
        (["case", "new", str(tmp_path / "c"), "--scan", "sample_scans/ct_sample.nii.gz", "--dicomweb",
          "http://127.0.0.1:9/dicom-web", "--study", "1.2.3"], "either a scan or --dicomweb"),
        (["case", "new", str(tmp_path / "c"), "--dicomweb", "http://u:p@127.0.0.1:9/dicom-web", "--study", "1.2.3"],
         "credentials in the URL are refused"),
    ]:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err
        assert words in err and err.count("error:") == 1, err
    assert not (tmp_path / "c").exists()
