"""Path confinement for the review server: only files inside the opened case are served.

A request path is refused (``PathRefused``) when, after percent-decoding as often as it still
changes (``%252e`` -> ``%2e`` -> ``.``), it holds a ``..`` segment, a backslash, a NUL or other
control character, a drive letter or an absolute path; and the file it names is resolved with
symlinks followed (``Path.resolve``) and must still lie below the resolved case root, so a
symlink inside the case that points out of it is refused too. Hidden entries (``.lock``,
``.staging``) are not served either, nor paths with a segment longer than a file name can be.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

_MAX_DECODE_ROUNDS = 5
MAX_SEGMENT_BYTES = 255  # longest file name the file systems we serve from accept
MAX_PATH_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_DRIVE = re.compile(r"^[A-Za-z]:")


class PathRefused(Exception):
    """A request path that would leave the served folder (or is malformed). Maps to HTTP 403."""


class PathTooLong(PathRefused):
    """A request path longer than any file name could be. Maps to HTTP 414."""


def fully_unquote(raw: str) -> str:
    """Percent-decode until the text no longer changes (at most a few rounds).

    More rounds than ``_MAX_DECODE_ROUNDS`` are refused: no honest client encodes a path five times.
    """
    text = raw
    for _ in range(_MAX_DECODE_ROUNDS):
        decoded = unquote(text, errors="strict")
        if decoded == text:
            return text
        text = decoded
    raise PathRefused(f"path {raw!r} is encoded too many times")


def check_request_path(raw_path: str) -> str:
    """Refuse traversal forms in a raw HTTP request target; return the decoded path.

    ``raw_path`` is the path as the client sent it (query string removed or not). Refused:
    ``..`` segments, backslashes, control characters (NUL included), ``//`` (protocol-relative),
    in any percent-encoded form.
    """
    path = raw_path.split("?", 1)[0].split("#", 1)[0]
    try:
        decoded = fully_unquote(path)
    except UnicodeDecodeError:
        raise PathRefused(f"path {raw_path!r} is not valid UTF-8") from None
    if _CONTROL.search(decoded):
        raise PathRefused(f"path {raw_path!r} holds control characters")
    if "\\" in decoded:
        raise PathRefused(f"path {raw_path!r} holds a backslash")
    if decoded.startswith("//"):
        raise PathRefused(f"path {raw_path!r} starts with //")
    if any(seg in ("..", ".") for seg in decoded.split("/")[1:]):
        raise PathRefused(f"path {raw_path[:80]!r} holds a dot segment")
    _check_lengths(decoded)
    return decoded


def _check_lengths(path: str) -> None:
    data = path.encode("utf-8", "surrogatepass")
    if len(data) > MAX_PATH_BYTES or any(len(seg) > MAX_SEGMENT_BYTES for seg in data.split(b"/")):
        raise PathTooLong(f"path of {len(data)} bytes has a segment or total length over "
                          f"{MAX_SEGMENT_BYTES}/{MAX_PATH_BYTES} bytes")


def resolve_inside(root: Path, relative: str) -> Path:
    """The existing regular file ``root / relative``, guaranteed to lie inside ``root``.

    ``relative`` is a decoded path below ``root`` (no leading slash needed). Raises
    ``PathRefused`` for absolute paths, drive letters, dot segments, hidden entries and anything
    whose resolved location (symlinks followed) is outside the resolved ``root``;
    ``FileNotFoundError`` when the path is inside but is not an existing regular file.
    """
    rel = fully_unquote(relative)
    if not rel or _CONTROL.search(rel) or "\\" in rel:
        raise PathRefused(f"path {relative!r} is empty or malformed")
    if rel.startswith("/") or _DRIVE.match(rel):
        raise PathRefused(f"path {relative!r} is absolute")
    _check_lengths(rel)
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathRefused(f"path {relative!r} holds an empty or dot segment")
    if any(p.startswith(".") for p in parts):
        raise PathRefused(f"path {relative!r} names a hidden entry")
    root_resolved = Path(root).resolve(strict=True)
    target = (root_resolved / Path(*parts)).resolve(strict=False)
    if not target.is_relative_to(root_resolved):
        raise PathRefused(f"path {relative!r} resolves outside the served folder")
    if not target.is_file():
        raise FileNotFoundError(str(target))
    return target
