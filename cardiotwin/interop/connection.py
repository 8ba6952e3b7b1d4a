"""Server URLs, credentials and HTTP errors for the PACS (DICOMweb) and FHIR server.

Credentials are read from the environment only, for ``kind`` ``dicomweb`` or ``fhir``:

- ``CARDIOTWIN_<KIND>_TOKEN`` (or ``CARDIOTWIN_<KIND>_TOKEN_FILE``, a file holding it): a bearer token;
- ``CARDIOTWIN_<KIND>_USER`` with ``CARDIOTWIN_<KIND>_PASSWORD`` (or ``..._PASSWORD_FILE``): HTTP basic.

A URL with a user or password in it is refused, so a secret never sits in a command line or a
shell history, and no error message or log line ever holds one.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from cardiotwin.errors import ConfigError, InteropError

log = logging.getLogger(__name__)

_PREFIX = {"dicomweb": "CARDIOTWIN_DICOMWEB", "fhir": "CARDIOTWIN_FHIR"}
_WHAT = {"dicomweb": "DICOMweb (PACS)", "fhir": "FHIR"}


def env_names(kind: str) -> str:
    p = _PREFIX[kind]
    return f"{p}_TOKEN (or {p}_TOKEN_FILE), or {p}_USER with {p}_PASSWORD (or {p}_PASSWORD_FILE)"


def check_url(url: str, kind: str) -> str:
    """The server root URL without a trailing slash; ConfigError for anything but plain http(s)."""
    parts = urlsplit(str(url).strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{_WHAT[kind]} URL must start with http:// or https:// and name a host, got {url!r}")
    if parts.username is not None or parts.password is not None:
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        raise ConfigError(f"{parts.scheme}://{host}{parts.path}: credentials in the URL are refused; "
                          f"set {env_names(kind)} instead")
    if parts.query or parts.fragment:
        raise ConfigError(f"{_WHAT[kind]} URL {urlunsplit(parts)}: must have no query or fragment")
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))


def _secret(name: str) -> str | None:
    """Value of the environment variable ``name`` or the stripped content of the file in ``name_FILE``."""
    value = os.environ.get(name)
    file = os.environ.get(f"{name}_FILE")
    if value and file:
        raise ConfigError(f"both {name} and {name}_FILE are set; set one of them")
    if file:
        try:
            text = Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{file} (from {name}_FILE): cannot be read ({exc.strerror or exc})") from None
        if not text:
            raise ConfigError(f"{file} (from {name}_FILE): is empty")
        return text
    return value or None


def _auth_classes():
    import requests

    class BearerAuth(requests.auth.AuthBase):
        """``Authorization: Bearer <token>``; its repr hides the token."""

        def __init__(self, token: str) -> None:
            self._token = token

        def __call__(self, request):
            request.headers["Authorization"] = f"Bearer {self._token}"
            return request

        def __repr__(self) -> str:
            return "BearerAuth(<hidden>)"

    return BearerAuth


def auth(kind: str) -> Any:
    """The requests auth object for ``kind`` from the environment (None: no credentials set)."""
    import requests

    p = _PREFIX[kind]
    token = _secret(f"{p}_TOKEN")
    user = os.environ.get(f"{p}_USER")
    password = _secret(f"{p}_PASSWORD")
    if token and (user or password):
        raise ConfigError(f"both a token ({p}_TOKEN) and a user/password ({p}_USER) are set; set one of them")
    if token:
        return _auth_classes()(token)
    if user or password:
        if not (user and password):
            raise ConfigError(f"HTTP basic authentication needs both {p}_USER and {p}_PASSWORD (or {p}_PASSWORD_FILE)")
        return requests.auth.HTTPBasicAuth(user, password)
    return None


def quiet_libraries() -> None:
    """The DICOMweb client and highdicom log every request and copied module at INFO: keep them to warnings."""
    for name in ("dicomweb_client", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)


def session(kind: str) -> Any:
    import requests

    s = requests.Session()
    s.auth = auth(kind)
    s.headers["User-Agent"] = "cardiotwin"
    return s


@contextlib.contextmanager
def http_errors(url: str, kind: str, what: str) -> Iterator[None]:
    """Turn connection failures and HTTP errors into one InteropError naming the URL and the action."""
    import requests

    try:
        yield
    except requests.exceptions.HTTPError as exc:
        response = exc.response
        code = response.status_code if response is not None else 0
        reason = (response.reason if response is not None else "") or ""
        if code in (401, 403):
            hint = (f"set {env_names(kind)}" if auth(kind) is None else
                    f"check the credentials in {_PREFIX[kind]}_*")
            raise InteropError(f"{url}: the {_WHAT[kind]} server refused access (HTTP {code} {reason}) to {what}; "
                               f"{hint}") from None
        if code == 404:
            raise InteropError(f"{url}: {what}: not found (HTTP 404); is the URL the server's {_WHAT[kind]} root "
                               f"and does the object exist?") from None
        raise InteropError(f"{url}: {what} failed (HTTP {code} {reason})") from None
    except requests.exceptions.Timeout:
        raise InteropError(f"{url}: the {_WHAT[kind]} server did not answer in time ({what})") from None
    except requests.exceptions.ConnectionError:
        raise InteropError(f"{url}: cannot connect to the {_WHAT[kind]} server ({what}); is it running, and is the "
                           f"URL right?") from None
    except requests.exceptions.RequestException as exc:
        raise InteropError(f"{url}: {what} failed ({type(exc).__name__})") from None
