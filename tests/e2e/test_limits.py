"""Limits and malformed input: 413, 431, 408, idle timeout, 400 for what
HTTP/1.1 forbids, max_connections, and a daemon that is still fine after."""
import json
import time

import pytest

from conftest import Daemon, finish_all, metric_value, parse_responses, recv_until, req, responses_complete

MAX_BODY = 1024
MAX_HEADER = 1024
MAX_HEADERS = 10
TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("limited"), {
        "limits": {"header_timeout": "1s", "body_timeout": "1s", "idle_timeout": "1s"},
    }, overrides=["limits.max_body_size=1k", "limits.max_header_size=1k",
                  "limits.max_headers=%d" % MAX_HEADERS])
    d.start()
    yield d
    finish_all([d])


def send(d, data, timeout=5.0):
    """(responses, closed, seconds) for DATA on a new connection: reads
    until the peer closes or TIMEOUT."""
    t0 = time.monotonic()
    with d.sock() as s:
        s.sendall(data)
        got, closed = recv_until(s, lambda x: False, timeout)
    return parse_responses(got), closed, time.monotonic() - t0


def error_code(body):
    return json.loads(body)["error"]["code"]


def assert_refused(d, data, status, code=None):
    rs, closed, _ = send(d, data)
    assert len(rs) == 1, rs
    assert rs[0][0] == status, rs[0]
    assert rs[0][1]["connection"].lower() == "close"
    assert "x-request-id" in rs[0][1]
    if code:
        assert error_code(rs[0][2]) == code
    assert closed, "the connection should be closed after a %d" % status
    return rs[0]


# ------------------------------------------------------------------ bodies

def test_body_at_the_limit_is_accepted(limited):
    doc = b'{"pad": "' + b"x" * (MAX_BODY - 11) + b'"}'
    assert len(doc) == MAX_BODY
    status, _, body = limited.request("POST", "/v1/echo", body=doc)
    assert status == 201
    assert json.loads(body)["bytes"] == MAX_BODY


def test_content_length_over_limit_is_413_at_once(limited):
    """Refused from the headers alone: the body is never waited for."""
    t0 = time.monotonic()
    with limited.sock() as s:
        s.sendall(req("POST", "/v1/echo", [("Content-Length", str(MAX_BODY + 1))]))
        got, closed = recv_until(s, lambda x: False, 5)
    assert time.monotonic() - t0 < TIMEOUT_S  # not a body timeout
    (status, headers, body), = parse_responses(got)
    assert status == 413
    assert error_code(body) == "payload_too_large"
    assert closed


def test_chunked_body_over_limit_is_413(limited):
    chunk = b"x" * 512
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    assert_refused(limited, req("POST", "/v1/echo", [("Transfer-Encoding", "chunked")], body), 413,
                   "payload_too_large")


def test_expect_continue_over_limit_gets_413_not_100(limited):
    rs, closed, _ = send(limited, req("POST", "/v1/echo", [("Content-Length", "5000"),
                                                           ("Expect", "100-continue")]))
    assert [r[0] for r in rs] == [413]
    assert closed


# ----------------------------------------------------------------- headers

def test_headers_within_limits_are_accepted(limited):
    headers = [("X-H%d" % i, "v") for i in range(MAX_HEADERS - 1)]  # and Host: exactly the maximum
    with limited.sock() as s:
        s.sendall(req("GET", "/v1/echo", headers))
        got, _ = recv_until(s, responses_complete(1), 5)
    assert parse_responses(got)[0][0] == 200


def test_header_block_too_large_is_431(limited):
    assert_refused(limited, req("GET", "/v1/echo", [("X-Big", "a" * (MAX_HEADER + 10))]), 431,
                   "headers_too_large")


def test_long_target_counts_against_header_size(limited):
    assert_refused(limited, req("GET", "/v1/items/" + "a" * (MAX_HEADER + 10)), 431)


def test_header_size_counts_the_whole_head(make_daemon):
    d = make_daemon(overrides=["limits.max_header_size=1k", "limits.max_headers=1000"])
    data = req("GET", "/v1/echo", [("X%d" % i, "v") for i in range(150)])
    assert len(data) > 1200
    rs, closed, _ = send(d, data, timeout=2)
    assert rs[0][0] == 431


def test_too_many_headers_is_431(limited):
    headers = [("X-H%d" % i, "v") for i in range(MAX_HEADERS + 1)]
    assert_refused(limited, req("GET", "/v1/echo", headers), 431, "headers_too_large")


# ---------------------------------------------------------------- timeouts

def test_slow_headers_get_408(limited):
    with limited.sock() as s:
        s.sendall(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Partial: yes\r\n")
        t0 = time.monotonic()
        got, closed = recv_until(s, lambda x: False, 5)
        elapsed = time.monotonic() - t0
    (status, headers, body), = parse_responses(got)
    assert status == 408
    assert error_code(body) == "request_timeout"
    assert headers["connection"].lower() == "close"
    assert closed
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 1.5


def test_slow_body_gets_408(limited):
    with limited.sock() as s:
        s.sendall(req("POST", "/v1/echo", [("Content-Length", "10")]) + b'{"a"')
        t0 = time.monotonic()
        got, closed = recv_until(s, lambda x: False, 5)
        elapsed = time.monotonic() - t0
    (status, _, body), = parse_responses(got)
    assert status == 408
    assert closed
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 1.5


def test_trickling_headers_still_time_out(limited):
    """The header timeout bounds the whole head, not the gap between bytes."""
    with limited.sock() as s:
        s.sendall(b"GET /v1/echo HTTP/1.1\r\n")
        t0 = time.monotonic()
        got = b""
        closed = False
        for i in range(12):
            try:
                s.sendall(b"X-T%d: v\r\n" % i)
            except OSError:
                closed = True
                break
            more, closed = recv_until(s, lambda x: False, 0.25)
            got += more
            if closed:
                break
        elapsed = time.monotonic() - t0
    rs = parse_responses(got)
    assert rs and rs[0][0] == 408
    assert elapsed < TIMEOUT_S + 1.5


def test_408_log_line_carries_the_request_id(limited):
    with limited.sock() as s:
        # a field is complete once the next line starts (it could be folded),
        # so one more header follows the id
        s.sendall(b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: slow-client-1\r\nAccept: */*\r\n")
        got, _ = recv_until(s, lambda x: False, 5)
    (status, headers, _), = parse_responses(got)
    assert status == 408
    assert headers["x-request-id"] == "slow-client-1"
    log = limited.wait_log("client too slow")
    slow = [l for l in log.splitlines() if "client too slow" in l]
    assert slow and "req=slow-client-1 " in slow[-1], slow


def test_idle_keep_alive_connection_is_closed_silently(limited):
    with limited.sock() as s:
        s.sendall(req("GET", "/v1/echo"))
        got, _ = recv_until(s, responses_complete(1), 5)
        assert parse_responses(got)[0][0] == 200
        t0 = time.monotonic()
        rest, closed = recv_until(s, lambda x: False, 5)
        elapsed = time.monotonic() - t0
    assert closed
    assert rest == b""  # no 408 for an idle connection
    assert TIMEOUT_S * 0.9 <= elapsed < TIMEOUT_S + 1.5


def test_silent_connection_is_closed(limited):
    with limited.sock() as s:
        t0 = time.monotonic()
        got, closed = recv_until(s, lambda x: False, 5)
    assert closed and got == b""
    assert time.monotonic() - t0 < TIMEOUT_S + 1.5


def test_active_keep_alive_connection_is_not_cut(limited):
    """Requests spaced under the idle timeout keep the connection open
    past it."""
    with limited.sock() as s:
        for i in range(4):
            s.sendall(req("GET", "/v1/items/%d" % i))
            got, closed = recv_until(s, responses_complete(1), 5)
            assert not closed and parse_responses(got)[0][0] == 200
            time.sleep(TIMEOUT_S * 0.5)


# -------------------------------------------------------- malformed input

@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET /v1/echo HTTP/9.9\r\nHost: x\r\n\r\n",
    b"GET  HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /v1/ec ho HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://relay.test/v1/echo HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
], ids=["garbage", "bad-version", "no-target", "space-in-target", "absolute-form", "tls"])
def test_malformed_request_line_is_400(limited, data):
    status, headers, body = assert_refused(limited, data, 400, "bad_request")


def test_content_length_with_transfer_encoding_is_400(limited):
    data = req("POST", "/v1/echo", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")],
               b"0\r\n\r\n")
    assert_refused(limited, data, 400, "bad_request")


@pytest.mark.parametrize("headers", [
    [("Content-Length", "2"), ("Content-Length", "3")],
    [("Content-Length", "-1")],
    [("Content-Length", "+2")],
    [("Content-Length", "2x")],
    [("Transfer-Encoding", "gzip")],
    [("Transfer-Encoding", "chunked, chunked")],
], ids=["two-lengths", "negative", "plus-sign", "junk", "te-not-chunked", "te-twice"])
def test_bad_framing_is_400(limited, headers):
    assert_refused(limited, req("POST", "/v1/echo", headers, b"{}"), 400)


def test_bad_chunk_size_is_400(limited):
    data = req("POST", "/v1/echo", [("Transfer-Encoding", "chunked")], b"zz\r\n{}\r\n0\r\n\r\n")
    assert_refused(limited, data, 400)


@pytest.mark.parametrize("data", [
    b"GET /v1/echo HTTP/1.1\nHost: x\n\n",
    b"GET /v1/echo HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nX-A: b\rc\r\n\r\n",
], ids=["bare-lf-everywhere", "bare-lf-after-header", "bare-cr-in-value"])
def test_bare_line_breaks_are_400(limited, data):
    assert_refused(limited, data, 400, "bad_request")


@pytest.mark.parametrize("line", [
    b"X\x01A: b",
    b"X(A): b",
    b"X-A: b\x00c",
    b"X-A: b\x7fc",
], ids=["ctl-in-name", "paren-in-name", "nul-in-value", "del-in-value"])
def test_invalid_header_characters_are_400(limited, line):
    assert_refused(limited, b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n" + line + b"\r\n\r\n", 400)


def test_leading_whitespace_header_line_is_400(limited):
    assert_refused(limited, b"GET /v1/echo HTTP/1.1\r\n Host: x\r\n\r\n", 400)


def test_obs_fold_is_refused_or_unfolded(limited):
    """RFC 9112 5.2: reject obs-fold with 400, or replace it with spaces;
    never pass CR/LF on to the handler."""
    rs, closed, _ = send(limited, b"GET /v1/echo HTTP/1.1\r\nHost: x\r\nUser-Agent: a\r\n b\r\n"
                                  b"Connection: close\r\n\r\n")
    assert len(rs) == 1
    status, _, body = rs[0]
    assert status in (200, 400)
    if status == 200:
        agent = json.loads(body)["agent"]
        assert "\r" not in agent and "\n" not in agent
        assert agent.split() == ["a", "b"]


@pytest.mark.parametrize("line", [b"User-Agent : e2e", b"User Agent: e2e", b": e2e"],
                         ids=["space-before-colon", "space-in-name", "empty-name"])
def test_malformed_field_name_is_400(limited, line):
    data = b"GET /v1/echo HTTP/1.1\r\nHost: x\r\n" + line + b"\r\nConnection: close\r\n\r\n"
    rs, closed, _ = send(limited, data)
    assert rs[0][0] == 400


def test_http11_without_host_is_400(limited):
    rs, _, _ = send(limited, b"GET /v1/echo HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert rs[0][0] == 400


def test_daemon_still_fine_after_abuse(limited):
    assert limited.running()
    status, _, body = limited.request("GET", "/")
    assert status == 200 and json.loads(body)["status"] == "ok"
    # and a full keep-alive exchange still works
    with limited.sock() as s:
        s.sendall(req("GET", "/v1/items/1") + req("POST", "/v1/echo", body=b'{"ok": true}'))
        got, _ = recv_until(s, responses_complete(2), 5)
    assert [r[0] for r in parse_responses(got)] == [200, 201]


# --------------------------------------------------------- max_connections

def open_idle(d, n):
    """N keep-alive connections that have each completed one request."""
    socks = []
    for i in range(n):
        s = d.sock()
        s.sendall(req("GET", "/v1/items/%d" % i))
        got, closed = recv_until(s, responses_complete(1), 5)
        assert parse_responses(got)[0][0] == 200 and not closed
        socks.append(s)
    return socks


def wait_connections(d, n, timeout=5.0):
    """Waits until the daemon counts N open connections besides the one
    asking (GET /metrics, which may itself be refused while it is full)."""
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        status, _, body = d.request("GET", "/metrics")
        if status == 200:
            got = metric_value(body.decode(), "relay_http_open_connections") - 1
            if got == n:
                break
        time.sleep(0.05)
    return got


@pytest.fixture
def capped(make_daemon):
    d = make_daemon(sections={"limits": {"max_connections": "3"}})
    assert wait_connections(d, 0) == 0
    return d


def overloaded(d):
    """Opens one more connection; returns (raw bytes, closed)."""
    with d.sock() as s:
        return recv_until(s, lambda x: False, 3)


def test_max_connections(capped):
    socks = open_idle(capped, 3)
    try:
        data, closed = overloaded(capped)
        assert closed, "the connection over the limit should be closed"
        assert data.startswith(b"HTTP/1.1 503 "), data
        assert data.split(b"\r\n\r\n", 1)[1].startswith(b'{"error":{"code":"overloaded"')
        # the first three keep working
        for i, s in enumerate(socks):
            s.sendall(req("GET", "/v1/items/again%d" % i))
            got, closed = recv_until(s, responses_complete(1), 5)
            assert not closed
            assert json.loads(parse_responses(got)[0][2])["id"] == "again%d" % i
    finally:
        for s in socks:
            s.close()
    # once they are gone there is room again
    assert wait_connections(capped, 0) == 0
    assert capped.request("GET", "/v1/echo")[0] == 200


def test_overload_reply_is_well_formed(capped):
    socks = open_idle(capped, 3)
    try:
        data, _ = overloaded(capped)
    finally:
        for s in socks:
            s.close()
    head, _, rest = data.partition(b"\r\n\r\n")
    status, headers, body = parse_responses(data)[0]
    assert status == 503
    assert int(headers["content-length"]) == len(rest)
    assert json.loads(body) == {"error": {"code": "overloaded", "message": "too many connections"}}


def test_overload_reply_has_request_id(capped):
    socks = open_idle(capped, 3)
    try:
        data, _ = overloaded(capped)
    finally:
        for s in socks:
            s.close()
    status, headers, _ = parse_responses(data)[0]
    assert status == 503
    assert "x-request-id" in headers
