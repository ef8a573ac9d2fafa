"""Paged listings of the Control API (ListExecutions, ListModules).

A listing is sorted by a stable key, (time, id): a creation or upload time never changes and
the id breaks ties, so an item created while a client pages through lands after its cursor or
before it, never twice. The page token is that key of the last item sent, base64url-encoded:
opaque to clients, and it needs no server state (a deleted item does not invalidate it).
"""
from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from roost.daemon.errors import InvalidRequest

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN = 512                  # characters: a token is a float, '/' and an id

T = TypeVar("T")
Key = tuple[float, str]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_token: str              # "": the last page


def page_size(requested: int) -> int:
    """0 means the default; a larger size than the maximum is cut to it (as Google APIs do)."""
    return min(requested, MAX_PAGE_SIZE) if requested else DEFAULT_PAGE_SIZE


def encode_token(key: Key) -> str:
    return base64.urlsafe_b64encode(f"{key[0]!r}/{key[1]}".encode()).decode().rstrip("=")


def decode_token(token: str) -> Key:
    """The key a token carries; INVALID_ARGUMENT for anything no listing handed out."""
    bad = InvalidRequest("page_token: not a next_page_token from a previous page of this listing")
    if len(token) > MAX_TOKEN:
        raise bad
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        when, _, ident = text.partition("/")
        key = (float(when), ident)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise bad from None
    if not ident or not math.isfinite(key[0]) or not ident.isprintable():
        raise bad
    return key


def page(items: Iterable[T], key: Callable[[T], Key], size: int, token: str) -> Page[T]:
    """The page of `items` (any order) after `token`'s key, at most page_size(size) long."""
    after = decode_token(token) if token else None
    ordered = sorted((i for i in items if after is None or key(i) > after), key=key)
    limit = page_size(size)
    chosen = ordered[:limit]
    more = len(ordered) > limit
    return Page(chosen, encode_token(key(chosen[-1])) if more and chosen else "")
