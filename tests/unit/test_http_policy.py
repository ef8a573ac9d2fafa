"""What a guest's request may be: URL parsing, destination matching (no prefix tricks), header
validation, the daemon's [http] settings, and an execution's --allow-http prefixes."""
from __future__ import annotations

import pytest

from roost.daemon.errors import InvalidRequest
from roost.daemon.http import policy
from roost.daemon.http.settings import HttpSettings, settings


def _settings(allow: list[dict], execution: list[str]) -> HttpSettings:
    return settings(allow, 30, 5, 3, 1 << 20, "").for_execution("e1", execution)


@pytest.mark.parametrize("url", [
    "https://api.example.com/v1/orders", "https://API.example.com:443/v1/x",
    "https://api.example.com/v1/", "https://api.example.com/v1", "https://api.example.com/v1/a/../b",
])
def test_allowed_under_prefix(url: str) -> None:
    s = _settings([{"prefix": "https://api.example.com/v1/"}], ["https://api.example.com/v1/"])
    target, keys = policy.allowed(s, url)
    assert target.host == "api.example.com" and not keys


@pytest.mark.parametrize("url", [
    "https://api.example.com.evil.net/v1/x",      # host boundary
    "https://api.example.com/v1x",                 # segment boundary
    "https://api.example.com/v1/../admin",         # dot segments
    "https://api.example.com/v1/%2e%2e/admin",     # encoded dots under a path prefix
    "http://api.example.com/v1/x",                 # scheme
    "https://api.example.com:8443/v1/x",           # port
])
def test_denied(url: str) -> None:
    s = _settings([{"prefix": "https://api.example.com/v1/"}], ["https://api.example.com/v1/"])
    with pytest.raises(policy.RequestError) as e:
        policy.allowed(s, url)
    assert e.value.denied


def test_both_lists_must_allow() -> None:
    s = _settings([{"prefix": "https://a.test/"}, {"prefix": "https://b.test/", "idempotency_keys": True}],
                  ["https://b.test/x/"])
    assert policy.allowed(s, "https://b.test/x/1")[1] is True
    with pytest.raises(policy.RequestError, match="--allow-http"):
        policy.allowed(s, "https://a.test/")
    with pytest.raises(policy.RequestError, match=r"\[\[http.allow\]\]"):
        policy.allowed(_settings([{"prefix": "https://a.test/x/"}], ["https://a.test/"]), "https://a.test/y")


@pytest.mark.parametrize("url", ["ftp://a.test/", "https:///x", "https://u:p@a.test/", "a.test/x",
                                 "https://a.test/\r\nX: y", "https://a.test:99999/"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(policy.RequestError) as e:
        policy.parse_url(url)
    assert not e.value.denied


def test_headers() -> None:
    assert policy.parse_headers("A: 1\r\nB-c:  two \r\n") == [("A", "1"), ("B-c", "two")]
    for bad in ("No colon\r\n", "Bad Name: x\r\n", "X: a\x00b\r\n", "X: a\nInjected: y\r\n"):
        with pytest.raises(policy.RequestError):
            policy.parse_headers(bad)


def test_methods() -> None:
    assert policy.check_method("post") == "POST"
    with pytest.raises(policy.RequestError):
        policy.check_method("GET /x HTTP/1.1\r\n")


def test_execution_prefixes_within_daemon() -> None:
    daemon = settings([{"prefix": "https://api.example.com/v1/"}], 30, 5, 3, 1 << 20, "")
    daemon.check_prefixes(["https://api.example.com/v1/orders/"])
    with pytest.raises(InvalidRequest, match="not within"):
        daemon.check_prefixes(["https://api.example.com/"])
    with pytest.raises(InvalidRequest, match="allows no outbound HTTP"):
        HttpSettings().check_prefixes(["https://api.example.com/"])


@pytest.mark.parametrize("allow, message", [
    ([{"prefix": 3}], "prefix"), ([{"prefix": "https://a/", "keys": True}], "unknown setting"),
    ([{"prefix": "https://a/", "idempotency_keys": "yes"}], "true or false"),
    ([{"prefix": "gopher://a/"}], "http and https"),
])
def test_config_errors(allow: list, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        settings(allow, 30, 5, 3, 1 << 20, "")


def test_settings_travel_in_start() -> None:
    s = _settings([{"prefix": "https://a.test/", "idempotency_keys": True}], ["https://a.test/x/"])
    assert HttpSettings.from_meta(s.to_meta()) == s
