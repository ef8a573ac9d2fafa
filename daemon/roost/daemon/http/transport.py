"""Sending a request: urllib3, with roost's timeouts, retries, response cap and TLS.

urllib3 (the maintained HTTP/1.1 client under `requests`, already installed with etcd3gw) keeps
connections to each destination alive across a guest's requests, verifies certificates by
default (the system CA store, or `http.ca_bundle`), and reads a response in pieces, so one
larger than `http.max_response_bytes` is cut off before it is held whole. It is also the
cheapest per request of the maintained clients, which a durable step pays on top of its
journal writes.

Retries: a connection that could not be made sent nothing, so it is retried whatever the
method; an error after sending (reset, timeout, a 5xx) only when the request may be sent again
(`Intent.resend`). Redirects are not followed: the guest sees them, and a redirect could lead
outside the allowed destinations.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import urllib3
from urllib3 import exceptions as u3

from roost.daemon.http.policy import MANAGED_HEADERS
from roost.daemon.http.records import FAILED, SENT, Reply, Request
from roost.daemon.http.settings import HttpSettings
from roost.daemon.runtime.vfs import Errno

READ_CHUNK = 256 << 10


@dataclass(frozen=True)
class Sent:
    """A reply and how it was got."""
    reply: Reply
    attempts: int
    seconds: float


class _TooLarge(Exception):
    pass


class Transport:
    """One execution's connections (a worker runs one execution)."""

    def __init__(self, settings: HttpSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self.sleep = sleep
        self.pool = urllib3.PoolManager(
            num_pools=32, maxsize=4, retries=False, cert_reqs="CERT_REQUIRED",
            ca_certs=settings.ca_bundle or None,
            timeout=urllib3.Timeout(connect=settings.connect_timeout_seconds,
                                    read=settings.timeout_seconds))

    def send(self, request: Request, key: str, resend: bool) -> Sent:
        """Send with retries; the reply (a response, or an errno with its reason)."""
        began = time.monotonic()
        headers = {k: v for k, v in request.headers if k.lower() not in MANAGED_HEADERS}
        if not request.key():
            headers["Idempotency-Key"] = key
        attempts, wait = 0, self.settings.backoff_seconds
        while True:
            attempts += 1
            reply, sent_anything = self._attempt(request, headers)
            retry = (reply.errno != 0 or reply.status >= 500) and (resend or not sent_anything)
            if not retry or attempts > self.settings.retries or reply.errno == Errno.MSGSIZE:
                return Sent(reply, attempts, time.monotonic() - began)
            self.sleep(wait)
            wait *= 2

    def _attempt(self, request: Request, headers: dict[str, str]) -> tuple[Reply, bool]:
        """One try: (reply, whether anything may have reached the server)."""
        try:
            response = self.pool.request(request.method, request.url, body=request.body or None,
                                         headers=headers, redirect=False, preload_content=False)
        except u3.SSLError as e:
            return _failed(Errno.PROTO, f"TLS: {_reason(e)}"), False
        except u3.NameResolutionError as e:
            return _failed(Errno.HOSTUNREACH, f"name resolution: {_reason(e)}"), False
        except u3.ConnectTimeoutError as e:
            return _failed(Errno.TIMEDOUT, f"connect timed out: {_reason(e)}"), False
        except u3.NewConnectionError as e:
            return _failed(Errno.CONNREFUSED, f"connection failed: {_reason(e)}"), False
        except u3.ReadTimeoutError:
            return _failed(Errno.TIMEDOUT, f"no response within {self.settings.timeout_seconds:g} s"), True
        except (u3.ProtocolError, u3.HTTPError, OSError) as e:
            return _failed(Errno.CONNRESET, f"connection lost: {_reason(e)}"), True
        try:
            return self._read(response), True
        except _TooLarge:
            return _failed(Errno.MSGSIZE, f"response larger than http.max_response_bytes "
                                          f"({self.settings.max_response_bytes} bytes)"), True
        except u3.ReadTimeoutError:
            return _failed(Errno.TIMEDOUT, f"response not complete within "
                                           f"{self.settings.timeout_seconds:g} s"), True
        except (u3.ProtocolError, u3.HTTPError, OSError) as e:
            return _failed(Errno.CONNRESET, f"connection lost reading the response: {_reason(e)}"), True
        finally:
            response.release_conn()

    def _read(self, response: urllib3.BaseHTTPResponse) -> Reply:
        """The whole response, or _TooLarge as soon as it passes the cap (the connection is
        then dropped, not drained)."""
        limit = self.settings.max_response_bytes
        headers = "".join(f"{k}: {v}\r\n" for k, v in response.headers.items()).encode("latin-1")
        declared = response.headers.get("content-length", "")
        if len(headers) > limit or (declared.isdigit() and len(headers) + int(declared) > limit):
            response.drain_conn = response.close     # type: ignore[method-assign]  # never drain
            response.close()
            raise _TooLarge()
        body = bytearray()
        deadline = time.monotonic() + self.settings.timeout_seconds
        while True:
            chunk = response.read(READ_CHUNK, decode_content=True)
            if not chunk:
                break
            body += chunk
            if len(headers) + len(body) > limit:
                response.close()
                raise _TooLarge()
            if time.monotonic() > deadline:
                response.close()
                raise u3.ReadTimeoutError(None, response.geturl() or "", "deadline")   # type: ignore[arg-type]
        return Reply(0, response.status, headers, bytes(body), outcome=SENT)

    def close(self) -> None:
        self.pool.clear()


def _failed(errno: Errno, error: str) -> Reply:
    return Reply(int(errno), error=error, outcome=FAILED)


def _reason(e: BaseException) -> str:
    """The innermost cause's message, on one line."""
    while True:
        inner = getattr(e, "reason", None) or e.__cause__ or e.__context__
        if not isinstance(inner, BaseException) or inner is e:
            break
        e = inner
    text = " ".join(str(e).split())
    return text[:300] or type(e).__name__
