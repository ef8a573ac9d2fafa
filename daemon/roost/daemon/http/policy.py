"""What a guest's request may be: a well-formed method, URL and headers, to a destination both
the operator (`[[http.allow]]`) and the execution (`--allow-http`) allow.

A destination is matched on its parts, never on the URL's text: scheme, host and port exactly
(so "https://api.example.com" never matches "https://api.example.com.evil.net/"), then the
path, with dot segments removed first, by whole segments ("/v1/" does not cover "/v1x" nor,
through "..", "/admin"). A path holding an encoded dot or slash is refused under a path
prefix other than "/": the server might decode it into a path the prefix does not cover.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from roost.daemon.errors import InvalidRequest

if TYPE_CHECKING:
    from roost.daemon.http.settings import HttpSettings

IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})   # RFC 9110 9.2.2
DEFAULT_PORTS = {"http": 80, "https": 443}
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")           # RFC 9110 field names, methods
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")              # CR, LF, NUL... in a value
_ENCODED_SEPARATOR = re.compile(r"%(2e|2f|5c)", re.IGNORECASE)
# Set by roost from the URL and the body: a guest's own value would contradict them.
MANAGED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection",
                             "keep-alive", "upgrade", "te", "trailer", "proxy-connection"})
MAX_URL_BYTES = 8192
MAX_HEADER_BYTES = 64 << 10
MAX_BODY_BYTES = 256 << 20       # a request body, read from the guest at once (imports or /dev/http)


class RequestError(ValueError):
    """A request that is malformed (EINVAL) or not allowed (EACCES); the text says why."""

    def __init__(self, message: str, denied: bool = False) -> None:
        super().__init__(message)
        self.denied = denied


@dataclass(frozen=True)
class Prefix:
    """A destination: scheme, host, port and path prefix (ending in "/" or a whole segment)."""
    scheme: str
    host: str
    port: int
    path: str

    def __str__(self) -> str:
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}{port}{self.path}"

    def covers(self, target: Target) -> bool:
        if (target.scheme, target.host, target.port) != (self.scheme, self.host, self.port):
            return False
        if self.path == "/":
            return True
        if target.encoded_separator:
            return False
        base = self.path.rstrip("/")
        return target.path == base or target.path.startswith(base + "/")


@dataclass(frozen=True)
class Target:
    """A request URL's parts, normalised for matching."""
    scheme: str
    host: str
    port: int
    path: str
    encoded_separator: bool


def parse_prefix(text: str, what: str = "--allow-http") -> Prefix:
    """A destination prefix as the operator or client writes it; InvalidRequest says why not."""
    try:
        target = parse_url(text)
    except RequestError as e:
        raise InvalidRequest(f"{what}: {e}") from None
    parts = urlsplit(text)
    if parts.query or parts.fragment:
        raise InvalidRequest(f"{what}: {text!r}: a prefix has no query or fragment")
    return Prefix(target.scheme, target.host, target.port, target.path)


def parse_url(url: str) -> Target:
    """The parts of an absolute http(s) URL; RequestError (EINVAL) when it is not one."""
    if len(url) > MAX_URL_BYTES:
        raise RequestError(f"URL longer than {MAX_URL_BYTES} bytes")
    if _BAD_VALUE.search(url) or " " in url or "\t" in url:
        raise RequestError(f"URL {url[:80]!r} holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise RequestError(f"URL {url[:80]!r}: {e}") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise RequestError(f"URL {url[:80]!r}: only http and https are supported")
    if not parts.hostname:
        raise RequestError(f"URL {url[:80]!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise RequestError(f"URL {url[:80]!r}: credentials in a URL are refused (send a header)")
    path = _normalise(parts.path or "/")
    return Target(scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme], path,
                  bool(_ENCODED_SEPARATOR.search(parts.path)))


def _normalise(path: str) -> str:
    """The path with dot segments removed (RFC 3986 5.2.4), a trailing "/" kept."""
    normal = posixpath.normpath("/" + path.lstrip("/"))
    normal = "/" + normal.lstrip("/")
    if path.endswith("/") and not normal.endswith("/"):
        normal += "/"
    return normal


def check_method(method: str) -> str:
    if not _TOKEN.match(method) or len(method) > 32:
        raise RequestError(f"method {method[:40]!r} is not an HTTP token")
    return method.upper()


def parse_headers(text: str) -> list[tuple[str, str]]:
    """'Name: value\\r\\n'... as (name, value) pairs; RequestError (EINVAL) on a malformed one."""
    if len(text) > MAX_HEADER_BYTES:
        raise RequestError(f"request headers longer than {MAX_HEADER_BYTES} bytes")
    headers = []
    for line in text.split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        value = value.strip(" \t")
        if not sep or not _TOKEN.match(name):
            raise RequestError(f"header line {line[:60]!r} is not 'Name: value'")
        if _BAD_VALUE.search(value):
            raise RequestError(f"header {name!r} holds a control character")
        headers.append((name, value))
    return headers


def allowed(settings: HttpSettings, url: str) -> tuple[Target, bool]:
    """The URL's target and whether its destination honours idempotency keys; RequestError
    (denied: EACCES) unless both the operator and the execution allow it."""
    target = parse_url(url)
    if not any(p.covers(target) for p in settings.execution):
        raise RequestError(f"{url[:120]} is not under the execution's --allow-http prefixes", denied=True)
    rules = [d for d in settings.allow if d.prefix.covers(target)]
    if not rules:
        raise RequestError(f"{url[:120]} is not under any [[http.allow]] prefix of this daemon",
                           denied=True)
    return target, any(d.idempotency_keys for d in rules)
