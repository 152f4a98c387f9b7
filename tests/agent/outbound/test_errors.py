"""Library-compatible NoInstance and Blocked errors, built in one place, against the real libraries' classes."""

from __future__ import annotations

import aiohttp
import httpx
import pytest
import requests

from tidegate.agent.outbound.errors import PLAIN, LibraryErrors, set_request, set_request_no_response
from tidegate.errors import BlockedError, BreakerOpenError, FlowBlockedError, NoInstanceError

# What each library module declares (it names its classes, and how its errors carry the request).
HTTPX = LibraryErrors("httpx.ConnectError", "httpx.TransportError", set_request)
REQUESTS = LibraryErrors("requests.ConnectionError", "requests.ConnectionError", set_request_no_response)
AIOHTTP = LibraryErrors("aiohttp.ClientConnectionError", "aiohttp.ClientConnectionError")

REFUSAL = BreakerOpenError("http://inventory", "dep", "circuit breaker OPEN", 3.0)


def test_plain_leaves_tidegates_own_errors_as_they_are() -> None:
    missing = NoInstanceError("orders", "gray")
    assert PLAIN.no_instance(missing, object()) is missing
    assert PLAIN.blocked(REFUSAL, object()) is REFUSAL


def test_httpx_no_instance_is_a_connect_error_carrying_the_request() -> None:
    request = httpx.Request("GET", "http://orders/x")
    error = HTTPX.no_instance(NoInstanceError("orders", "gray"), request)
    assert isinstance(error, NoInstanceError) and isinstance(error, ConnectionError)
    assert isinstance(error, httpx.ConnectError) and isinstance(error, httpx.HTTPError)
    assert (error.service, error.lane) == ("orders", "gray")
    assert str(error) == str(NoInstanceError("orders", "gray"))
    assert error.request is request
    assert type(error).__name__ == "HttpxNoInstanceError"


def test_httpx_blocked_error_carries_the_request() -> None:
    request = httpx.Request("GET", "http://inventory/x")
    error = HTTPX.blocked(REFUSAL, request)
    assert isinstance(error, BreakerOpenError) and isinstance(error, BlockedError) and isinstance(error, httpx.TransportError)
    assert (error.resource, error.rule, error.reason, error.retry_after_s) == ("http://inventory", "dep", "circuit breaker OPEN", 3.0)
    assert error.http_status == 503 and str(error) == str(REFUSAL)
    try:
        raise error
    except httpx.HTTPError as caught:
        assert caught.request is request  # today: RuntimeError("The .request property has not been set.")
    assert type(error).__name__ == "BreakerOpenError" and type(error).__module__ == "tidegate.errors"


def test_httpx_errors_without_a_request_say_so_as_httpx_does() -> None:
    error = HTTPX.blocked(FlowBlockedError("http://orders", "limit"))
    with pytest.raises(RuntimeError, match="has not been set"):
        _ = error.request  # type: ignore[attr-defined]


def test_requests_errors_carry_the_prepared_request_and_no_response() -> None:
    request = requests.Request("GET", "http://orders/x").prepare()
    missing = REQUESTS.no_instance(NoInstanceError("orders"), request)
    assert isinstance(missing, NoInstanceError) and isinstance(missing, requests.ConnectionError)
    assert isinstance(missing, requests.RequestException)
    assert missing.request is request and missing.response is None
    assert type(missing).__name__ == "RequestsNoInstanceError"
    refused = REQUESTS.blocked(REFUSAL, request)
    assert isinstance(refused, BreakerOpenError) and isinstance(refused, requests.RequestException)
    assert refused.request is request and refused.response is None


def test_aiohttp_errors_are_client_connection_errors() -> None:
    missing = AIOHTTP.no_instance(NoInstanceError("orders"), object())
    assert isinstance(missing, NoInstanceError) and isinstance(missing, aiohttp.ClientConnectionError)
    assert isinstance(missing, aiohttp.ClientError)
    assert type(missing).__name__ == "AiohttpNoInstanceError"
    refused = AIOHTTP.blocked(FlowBlockedError("http://orders", "limit", "over 3 per 1s", 0.5), object())
    assert isinstance(refused, FlowBlockedError) and isinstance(refused, aiohttp.ClientError)
    assert refused.retry_after_s == 0.5


def test_each_combined_class_is_built_once() -> None:
    assert type(HTTPX.no_instance(NoInstanceError("a"))) is type(HTTPX.no_instance(NoInstanceError("b")))
    assert type(HTTPX.blocked(REFUSAL)) is type(HTTPX.blocked(BreakerOpenError("http://x")))
    assert type(HTTPX.blocked(REFUSAL)) is not type(HTTPX.blocked(FlowBlockedError("http://x")))
    assert type(HTTPX.blocked(REFUSAL)) is not type(REQUESTS.blocked(REFUSAL))


def test_a_name_that_is_no_exception_class_is_refused() -> None:
    with pytest.raises(TypeError, match="httpx.Client is not an exception class"):
        LibraryErrors("httpx.Client").no_instance(NoInstanceError("orders"))
