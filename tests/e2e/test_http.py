"""HTTP as the daemon speaks it: routing, the health document, errors,
HEAD, parameters, request ids, JSON bodies, keep-alive, pipelining, chunked
bodies, Expect, HTTP/1.0, metrics, mount prefixes, and clients that leave."""
import json
import re
import socket
import struct
import threading
import time

import pytest

from conftest import exchange, metric_value, parse_responses, recv_until, req, responses_complete, wait_closed

GENERATED_ID = re.compile(r"^[0-9a-f]{20}$")
PLAIN_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def error_of(body):
    doc = json.loads(body)
    assert set(doc) == {"error"}, doc
    assert set(doc["error"]) >= {"code", "message"}, doc
    return doc["error"]


# ------------------------------------------------------------ health

def test_health_document(shared_daemon):
    status, headers, body = shared_daemon.request("GET", "/")
    assert status == 200
    assert headers["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["name"] == "relay"
    assert re.match(r"^\d+\.\d+\.\d+", doc["version"])
    assert doc["status"] == "ok"
    assert doc["protocol"] == "Echo Protocol v1"  # echo's health hook
    assert doc["plugins"] == [{"name": "echo", "version": "1.2.3"},
                              {"name": "consumer", "version": "0.1.0"},
                              {"name": "styles", "version": "0.1.0"}]
    assert int(headers["content-length"]) == len(body)


def test_health_head(shared_daemon):
    _, _, get_body = shared_daemon.request("GET", "/")
    status, headers, body = shared_daemon.request("HEAD", "/")
    assert status == 200
    assert body == b""
    assert int(headers["content-length"]) == len(get_body)


# ------------------------------------------------------ routing errors

def test_not_found(shared_daemon):
    status, headers, body = shared_daemon.request("GET", "/v1/nothing/here")
    assert status == 404
    assert headers["content-type"] == "application/json"
    assert error_of(body)["code"] == "not_found"
    assert "x-request-id" in headers


def test_not_found_keeps_connection(shared_daemon):
    data = req("GET", "/nope") + req("GET", "/v1/echo")
    rs, s = exchange(shared_daemon, data, 2)
    s.close()
    assert [r[0] for r in rs] == [404, 200]


@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/v1/echo", {"GET", "POST", "HEAD"}),
    ("POST", "/v1/items/3", {"GET", "DELETE", "HEAD"}),
    ("GET", "/v1/relays/sessions:authorize-user", {"POST"}),
    ("DELETE", "/v1/items/3/parts/4", {"GET", "HEAD"}),
])
def test_method_not_allowed(shared_daemon, method, path, allow):
    status, headers, body = shared_daemon.request(method, path)
    assert status == 405
    assert {m.strip() for m in headers["allow"].split(",")} == allow
    err = error_of(body)
    assert err["code"] == "method_not_allowed"
    assert method in err["message"]


def test_method_not_allowed_in_plugin_style(shared_daemon):
    """A 405 is answered in the style of the plugin owning the path
    (consumer: string style)."""
    status, headers, body = shared_daemon.request("POST", "/v1/twice")
    assert status == 405
    assert headers["allow"] == "GET, HEAD"
    doc = json.loads(body)
    assert list(doc) == ["error"] and isinstance(doc["error"], str)


def test_unknown_method_is_400(shared_daemon):
    rs, s = exchange(shared_daemon, req("BREW", "/v1/echo"))
    assert rs[0][0] == 400
    assert wait_closed(s)
    s.close()


# ---------------------------------------------------------------- HEAD

def test_head_has_headers_and_no_body(shared_daemon):
    _, get_headers, get_body = shared_daemon.request("GET", "/v1/items/head-check")
    s = shared_daemon.sock()
    s.sendall(req("HEAD", "/v1/items/head-check", [("Connection", "close")]))
    data, closed = recv_until(s, lambda d: False, 5)
    s.close()
    assert closed
    head, _, rest = data.partition(b"\r\n\r\n")
    assert rest == b""  # not a byte of body
    status, headers = parse_responses(head + b"\r\n\r\n", head_request=True)[0][:2]
    assert status == 200
    assert int(headers["content-length"]) == len(get_body)  # the GET body's length
    assert headers["content-type"] == get_headers["content-type"]


def test_head_runs_the_get_handler(shared_daemon):
    status, headers, body = shared_daemon.request("HEAD", "/v1/echo")
    assert (status, body) == (200, b"")
    assert headers["x-echo"] == "yes"  # set by echo's GET handler


def test_head_then_get_on_one_connection(shared_daemon):
    s = shared_daemon.sock()
    s.sendall(req("HEAD", "/v1/items/7"))
    data, _ = recv_until(s, lambda d: b"\r\n\r\n" in d, 5)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\n")
    s.sendall(req("GET", "/v1/items/7"))
    data, _ = recv_until(s, responses_complete(1), 5)
    s.close()
    assert json.loads(parse_responses(data)[0][2]) == {"id": "7", "part": None}


# ---------------------------------------------------------- parameters

@pytest.mark.parametrize("path, expected", [
    ("/v1/items/abc", {"id": "abc", "part": None}),
    ("/v1/items/x/parts/y", {"id": "x", "part": "y"}),
    ("/v1/items/a%2Fb", {"id": "a/b", "part": None}),
    ("/v1/items/a%2fb/parts/c%2Fd", {"id": "a/b", "part": "c/d"}),
    ("/v1/items/two%20words", {"id": "two words", "part": None}),
    ("/v1/items/caf%C3%A9", {"id": "caf\u00e9", "part": None}),
    ("/v1/items/a+b", {"id": "a+b", "part": None}),  # '+' is a space in queries only
    ("/v1/items/%3A%3F%23", {"id": ":?#", "part": None}),
])
def test_path_parameters(shared_daemon, path, expected):
    status, _, body = shared_daemon.request("GET", path)
    assert status == 200
    assert json.loads(body) == expected


def test_delete_route(shared_daemon):
    status, _, body = shared_daemon.request("DELETE", "/v1/items/9")
    assert status == 200
    assert json.loads(body)["id"] == "9"


@pytest.mark.parametrize("target", ["/v1/items/%zz", "/v1/items/%4", "/v1/items/%00", "*"])
def test_bad_targets_are_400(shared_daemon, target):
    rs, s = exchange(shared_daemon, req("GET", target))
    assert rs[0][0] == 400
    assert error_of(rs[0][2])["code"] == "bad_request"
    s.close()


def test_literal_colon_route(shared_daemon):
    status, _, body = shared_daemon.request("POST", "/v1/relays/sessions:authorize-user")
    assert status == 200
    assert json.loads(body) == {"action": "authorize-user"}
    # the colon is part of the literal segment, not a parameter
    assert shared_daemon.request("POST", "/v1/relays/sessions:other")[0] == 404
    assert shared_daemon.request("POST", "/v1/relays/sessions")[0] == 404
    # an encoded colon is the same segment once decoded
    assert shared_daemon.request("POST", "/v1/relays/sessions%3Aauthorize-user")[0] == 200


@pytest.mark.parametrize("query, q", [
    ("q=hello", "hello"),
    ("q=a%20b+c", "a b c"),
    ("q=%2B%26%3D", "+&="),
    ("x=1&q=second&y=2", "second"),
    ("q=first&q=second", "first"),
    ("%71=encoded-key", "encoded-key"),
    ("q=", ""),
    ("q", ""),
    ("qq=1", None),
    ("", None),
])
def test_query_decoding(shared_daemon, query, q):
    target = "/v1/echo" + ("?" + query if query else "")
    status, _, body = shared_daemon.request("GET", target)
    assert status == 200
    doc = json.loads(body)
    assert doc["q"] == q
    assert doc["target"] == target  # the raw target, undecoded
    assert doc["path"] == "/v1/echo"


def test_handler_reads_headers(shared_daemon):
    status, headers, body = shared_daemon.request("GET", "/v1/echo", headers={"User-Agent": "e2e/1.0"})
    assert status == 200
    assert headers["x-echo"] == "yes"  # a header the handler set
    assert json.loads(body)["agent"] == "e2e/1.0"


# ---------------------------------------------------------- request ids

def test_request_id_generated(shared_daemon):
    ids = set()
    for _ in range(5):
        status, headers, body = shared_daemon.request("GET", "/v1/echo")
        rid = headers["x-request-id"]
        assert GENERATED_ID.match(rid), rid
        assert json.loads(body)["request_id"] == rid  # the handler sees the same id
        ids.add(rid)
    assert len(ids) == 5


@pytest.mark.parametrize("given", ["abc", "trace.ID_1-2", "x" * 47])
def test_request_id_echoed(shared_daemon, given):
    status, headers, body = shared_daemon.request("GET", "/v1/echo", headers={"X-Request-Id": given})
    assert headers["x-request-id"] == given
    assert json.loads(body)["request_id"] == given


def test_request_id_of_64_chars_echoed(shared_daemon):
    given = "0123456789abcdef" * 4  # 64 characters: the documented maximum
    status, headers, body = shared_daemon.request("GET", "/v1/echo", headers={"X-Request-Id": given})
    assert status == 200
    assert headers["x-request-id"] == given
    assert json.loads(body)["request_id"] == given


@pytest.mark.parametrize("given", ["has space", "a/b", "x" * 65, "quote\"d", "\u00e9t\u00e9"])
def test_request_id_replaced_when_not_plain(shared_daemon, given):
    status, headers, body = shared_daemon.request("GET", "/v1/echo",
                                                  headers={"X-Request-Id": given.encode("utf-8")})
    rid = headers["x-request-id"]
    assert rid != given
    assert GENERATED_ID.match(rid), rid


def test_request_id_on_errors(shared_daemon):
    for method, path in (("GET", "/nope"), ("PUT", "/v1/echo"), ("GET", "/v1/fail")):
        _, headers, _ = shared_daemon.request(method, path, headers={"X-Request-Id": "err-id-1"})
        assert headers["x-request-id"] == "err-id-1"
    rs, s = exchange(shared_daemon, b"NOT HTTP AT ALL\r\n\r\n")
    s.close()
    assert rs[0][0] == 400
    assert PLAIN_ID.match(rs[0][1]["x-request-id"])


def test_request_id_in_access_log(shared_daemon):
    shared_daemon.request("GET", "/v1/items/logged", headers={"X-Request-Id": "log-me-123"})
    log = shared_daemon.wait_log("req=log-me-123")
    lines = [l for l in log.splitlines() if "req=log-me-123" in l]
    assert lines, log[-2000:]
    assert "GET /v1/items/logged 200" in lines[-1]


def test_request_id_in_log_when_client_resets(shared_daemon):
    s = shared_daemon.sock()
    s.sendall(req("GET", "/v1/slow?ms=211", [("X-Request-Id", "reset-by-client-1")]))
    time.sleep(0.05)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()  # RST, not FIN
    log = shared_daemon.wait_log("GET /v1/slow?ms=211 ", timeout=3)
    lines = [l for l in log.splitlines() if "GET /v1/slow?ms=211 " in l]
    assert lines, log[-2000:]
    assert "req=reset-by-client-1 " in lines[-1], lines[-1]


# ---------------------------------------------------------------- JSON

def test_json_post(shared_daemon):
    doc = {"a": 1, "list": [1, 2, 3], "nested": {"s": "\u00fcnicode"}}
    raw = json.dumps(doc).encode()
    status, headers, body = shared_daemon.request("POST", "/v1/echo", body=raw,
                                                  headers={"Content-Type": "application/json"})
    assert status == 201
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"received": doc, "bytes": len(raw)}


@pytest.mark.parametrize("body, line, column", [
    (b'{"a": ', 1, None),
    (b'{"a": 1,}', 1, None),
    (b'{\n  "a": tru\n}', 2, None),
])
def test_malformed_json(shared_daemon, body, line, column):
    status, headers, resp = shared_daemon.request("POST", "/v1/echo", body=body,
                                                  headers={"Content-Type": "application/json"})
    assert status == 400
    err = error_of(resp)
    assert err["code"] == "invalid_json"
    m = re.match(r"^malformed JSON at line (\d+), column (\d+): .+", err["message"])
    assert m, err["message"]
    assert int(m.group(1)) == line


def test_malformed_json_quoting_a_cut_character_is_still_400(shared_daemon):
    """The parser's message quotes the bytes before the error, here half of
    an "\u00e9": invalid UTF-8, which jansson refused, so the reply was a
    500 with the body {} (found by fuzz_json_routes)."""
    status, _, resp = shared_daemon.request("POST", "/v1/echo", body=b'{"a\\\xc3\xa9": 1}',
                                            headers={"Content-Type": "application/json"})
    assert status == 400, resp
    err = error_of(resp)
    assert err["code"] == "invalid_json"
    assert err["message"].startswith("malformed JSON at line 1, column "), err
    assert "\ufffd" in err["message"], err


@pytest.mark.parametrize("segment, shown", [("%FF", "\ufffd"), ("%C3%A9", "\u00e9"), ("%ED%A0%80", "\ufffd" * 3)])
def test_error_message_quoting_a_path_parameter(shared_daemon, segment, shown):
    """A plugin's error message with a decoded path parameter that is not
    UTF-8 still answers in the plugin's style, invalid bytes as U+FFFD."""
    status, _, resp = shared_daemon.request("GET", "/v1/styles/" + segment)
    assert status == 404, resp
    assert error_of(resp) == {"code": "thing.not_found", "message": "no thing " + shown}


@pytest.mark.parametrize("body, message", [
    (b"", "a JSON object body is required"),
    (b"[1, 2]", "the body must be a JSON object"),
    (b'"text"', None),  # not even a JSON document to the parser
])
def test_json_body_must_be_an_object(shared_daemon, body, message):
    status, _, resp = shared_daemon.request("POST", "/v1/echo", body=body)
    assert status == 400
    err = error_of(resp)
    assert err["code"] == "invalid_json"
    if message:
        assert err["message"] == message


def test_handler_without_reply_is_500(shared_daemon):
    status, headers, body = shared_daemon.request("GET", "/v1/fail", headers={"X-Request-Id": "fail-1"})
    assert status == 500
    assert error_of(body) == {"code": "internal", "message": "internal error"}
    log = shared_daemon.wait_log("without a reply")
    assert any("req=fail-1" in l and "without a reply" in l for l in log.splitlines())


# ------------------------------------------------- connections and framing

def test_keep_alive(shared_daemon):
    s = shared_daemon.sock()
    try:
        for i in range(5):
            s.sendall(req("GET", "/v1/items/%d" % i))
            data, closed = recv_until(s, responses_complete(1), 5)
            assert not closed
            (status, headers, body), = parse_responses(data)
            assert status == 200
            assert "connection" not in headers or headers["connection"].lower() != "close"
            assert json.loads(body)["id"] == str(i)
    finally:
        s.close()


def test_keep_alive_with_http_client(shared_daemon):
    conn = shared_daemon.connection()
    try:
        ports = set()
        for i in range(3):
            conn.request("GET", "/v1/items/%d" % i)
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["id"] == str(i)
            ports.add(conn.sock.getsockname()[1])
        assert len(ports) == 1  # one connection throughout
    finally:
        conn.close()


def test_pipelining(shared_daemon):
    data = b"".join(req("GET", "/v1/items/%d" % i, [("X-Request-Id", "pipe-%d" % i)]) for i in range(5))
    rs, s = exchange(shared_daemon, data, 5)
    s.close()
    assert len(rs) == 5
    assert [json.loads(r[2])["id"] for r in rs] == [str(i) for i in range(5)]
    assert [r[1]["x-request-id"] for r in rs] == ["pipe-%d" % i for i in range(5)]


def test_pipelining_behind_async_handler(shared_daemon):
    """A slow (thread-pool) reply first: the others wait, in order."""
    data = (req("GET", "/v1/slow?ms=200") + req("POST", "/v1/echo", body=b'{"n": 1}')
            + req("GET", "/v1/items/last") + req("GET", "/v1/slow?ms=10"))
    rs, s = exchange(shared_daemon, data, 4)
    s.close()
    assert [r[0] for r in rs] == [200, 201, 200, 200]
    assert json.loads(rs[0][2]) == {"slept_ms": 200}
    assert json.loads(rs[1][2])["received"] == {"n": 1}
    assert json.loads(rs[2][2])["id"] == "last"
    assert json.loads(rs[3][2]) == {"slept_ms": 10}


def test_pipelined_flood_behind_async_handler(shared_daemon):
    """More pipelined input than the daemon holds while a reply is async
    (64 KiB): TCP pushes back, nothing is lost, order is kept."""
    n = 3000
    data = req("GET", "/v1/slow?ms=100") + b"".join(req("GET", "/v1/items/%d" % i) for i in range(n))
    assert len(data) > 2 * 65536
    s = shared_daemon.sock()
    got = []
    reader = threading.Thread(target=lambda: got.append(recv_until(s, responses_complete(n + 1), 20)[0]))
    reader.start()
    try:
        s.sendall(data)
        reader.join(25)
    finally:
        s.close()
    rs = parse_responses(got[0])
    assert len(rs) == n + 1
    assert json.loads(rs[0][2]) == {"slept_ms": 100}
    assert [json.loads(r[2])["id"] for r in rs[1:]] == [str(i) for i in range(n)]


def test_pipelining_split_across_writes(shared_daemon):
    data = b"".join(req("GET", "/v1/items/%d" % i) for i in range(3))
    s = shared_daemon.sock()
    try:
        for i in range(0, len(data), 7):  # the requests cut at odd places
            s.sendall(data[i:i + 7])
            time.sleep(0.002)
        got, _ = recv_until(s, responses_complete(3), 5)
    finally:
        s.close()
    assert [json.loads(r[2])["id"] for r in parse_responses(got)] == ["0", "1", "2"]


def test_chunked_request_body(shared_daemon):
    doc = b'{"chunked": true, "n": 12345}'
    chunks = [doc[:5], doc[5:6], doc[6:20], doc[20:]]
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    rs, s = exchange(shared_daemon, req("POST", "/v1/echo", [("Transfer-Encoding", "chunked")], body))
    s.close()
    status, _, resp = rs[0]
    assert status == 201
    assert json.loads(resp) == {"received": {"chunked": True, "n": 12345}, "bytes": len(doc)}


def test_chunked_body_sent_slowly_with_extensions(shared_daemon):
    s = shared_daemon.sock()
    try:
        s.sendall(req("POST", "/v1/echo", [("Transfer-Encoding", "chunked")]))
        for piece in (b"4;ext=1\r\n", b'{"a"', b"\r\n", b"3\r\n:7}\r\n", b"0\r\n", b"\r\n"):
            time.sleep(0.01)
            s.sendall(piece)
        got, _ = recv_until(s, responses_complete(1), 5)
    finally:
        s.close()
    status, _, body = parse_responses(got)[0]
    assert status == 201
    assert json.loads(body) == {"received": {"a": 7}, "bytes": 7}


def test_expect_100_continue(shared_daemon):
    body = b'{"expect": "continue"}'
    s = shared_daemon.sock()
    try:
        s.sendall(req("POST", "/v1/echo", [("Content-Length", str(len(body))), ("Expect", "100-continue")]))
        interim, _ = recv_until(s, lambda d: b"\r\n\r\n" in d, 5)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        s.sendall(body)
        got, _ = recv_until(s, responses_complete(1), 5)
    finally:
        s.close()
    status, _, resp = parse_responses(got)[0]
    assert status == 201
    assert json.loads(resp)["received"] == {"expect": "continue"}


def test_expect_other_than_continue_is_417(shared_daemon):
    rs, s = exchange(shared_daemon, req("POST", "/v1/echo", [("Expect", "something-else")], b"{}"))
    assert rs[0][0] == 417
    assert error_of(rs[0][2])["code"] == "expectation_failed"
    assert wait_closed(s)
    s.close()


def test_http10_closes_without_keep_alive(shared_daemon):
    rs, s = exchange(shared_daemon, req("GET", "/v1/echo", version="HTTP/1.0"))
    try:
        assert rs[0][0] == 200
        assert rs[0][1].get("connection", "").lower() == "close"
        assert wait_closed(s, 3)
    finally:
        s.close()


def test_http10_keep_alive(shared_daemon):
    s = shared_daemon.sock()
    try:
        for i in range(2):
            s.sendall(req("GET", "/v1/items/%d" % i, [("Connection", "keep-alive")], version="HTTP/1.0"))
            got, closed = recv_until(s, responses_complete(1), 5)
            (status, headers, body), = parse_responses(got)
            assert status == 200
            assert headers["connection"].lower() == "keep-alive"
            assert json.loads(body)["id"] == str(i)
            assert not closed
    finally:
        s.close()


def test_connection_close_request(shared_daemon):
    rs, s = exchange(shared_daemon, req("GET", "/v1/echo", [("Connection", "close")]))
    try:
        assert rs[0][0] == 200
        assert rs[0][1]["connection"].lower() == "close"
        assert wait_closed(s, 3)
    finally:
        s.close()


def test_upgrade_is_answered_then_closed(shared_daemon):
    rs, s = exchange(shared_daemon, req("GET", "/v1/echo", [("Connection", "Upgrade"),
                                                            ("Upgrade", "websocket")]))
    try:
        assert rs[0][0] == 200
        assert rs[0][1]["connection"].lower() == "close"
        assert wait_closed(s, 3)
    finally:
        s.close()


def test_standard_response_headers(shared_daemon):
    status, headers, _ = shared_daemon.request("GET", "/v1/echo")
    assert headers["server"] == "relay"
    assert re.match(r"^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$", headers["date"])


# ---------------------------------------------------------------- metrics

def test_metrics_count_requests(make_daemon):
    d = make_daemon(sections={"plugins": {"load": "echo consumer"}})
    for _ in range(3):
        assert d.request("GET", "/v1/echo")[0] == 200
    assert d.request("POST", "/v1/echo", body=b'{"x": 1}')[0] == 201
    assert d.request("GET", "/v1/twice?v=1")[0] == 200
    assert d.request("GET", "/nope")[0] == 404
    rs, s = exchange(d, b"BAD REQUEST\r\n\r\n")  # a parse error
    s.close()
    assert rs[0][0] == 400
    status, headers, body = d.request("GET", "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    text = body.decode()
    assert "# TYPE relay_http_requests_total counter" in text
    assert metric_value(text, "relay_http_requests_total", plugin="echo", route="GET /v1/echo",
                        status="200") == 3
    assert metric_value(text, "relay_http_requests_total", plugin="echo", route="POST /v1/echo",
                        status="201") == 1
    assert metric_value(text, "relay_http_requests_total", plugin="consumer", route="GET /v1/twice",
                        status="200") == 1
    assert metric_value(text, "relay_http_requests_total", route="unmatched", status="404") == 1
    assert metric_value(text, "relay_http_requests_total", route="unmatched", status="400") == 1
    assert metric_value(text, "relay_plugin_echo_requests_total", plugin="echo") == 3
    # histogram: cumulative buckets, +Inf equals the count
    assert "# TYPE relay_http_request_duration_seconds histogram" in text
    count = metric_value(text, "relay_http_request_duration_seconds_count")
    assert count >= 6
    assert metric_value(text, "relay_http_request_duration_seconds_bucket", le="+Inf") == count
    buckets = [float(l.rpartition(" ")[2]) for l in text.splitlines()
               if l.startswith("relay_http_request_duration_seconds_bucket")]
    assert buckets == sorted(buckets)
    assert metric_value(text, "relay_http_request_duration_seconds_sum") >= 0
    assert metric_value(text, "relay_http_open_connections") >= 1


def test_metrics_follow_more_requests(shared_daemon):
    before = metric_value(shared_daemon.metrics(), "relay_http_requests_total", plugin="echo",
                          route="GET /v1/items/:id", status="200") or 0
    for i in range(4):
        shared_daemon.request("GET", "/v1/items/m%d" % i)
    after = metric_value(shared_daemon.metrics(), "relay_http_requests_total", plugin="echo",
                         route="GET /v1/items/:id", status="200")
    assert after == before + 4


def test_metrics_can_be_disabled(make_daemon):
    d = make_daemon(sections={"server": {"metrics": "false"}})
    status, _, body = d.request("GET", "/metrics")
    assert status == 404
    assert error_of(body)["code"] == "not_found"


# ----------------------------------------------------------- mount, styles

def test_mount_prefix(make_daemon):
    d = make_daemon(sections={"echo": {"mount": "/m"}})
    status, _, body = d.request("GET", "/m/v1/echo")
    assert status == 200
    assert json.loads(body)["path"] == "/m/v1/echo"
    assert d.get_json("/m/v1/items/5") == (200, {"id": "5", "part": None})
    assert d.request("GET", "/v1/echo")[0] == 404
    assert d.request("GET", "/")[0] == 200  # the core's routes do not move
    assert metric_value(d.metrics(), "relay_http_requests_total", route="GET /m/v1/echo", status="200") == 1


@pytest.mark.parametrize("style, expected", [
    ("object", {"error": {"code": "not_found", "message": "no such route"}}),
    ("string", {"error": "no such route"}),
    ("detail", {"detail": "no such route"}),
])
def test_server_error_style(make_daemon, style, expected):
    d = make_daemon(sections={"server": {"error_style": style}})
    status, _, body = d.request("GET", "/nope")
    assert status == 404
    assert json.loads(body) == expected


# ------------------------------------------------------------- robustness

def test_large_body_round_trip(shared_daemon):
    """Close to the default 1m limit, both ways (the reply is written in
    several pieces)."""
    doc = {"s": "x" * 900000}
    raw = json.dumps(doc).encode()
    status, headers, body = shared_daemon.request("POST", "/v1/echo", body=raw, timeout=15)
    assert status == 201
    assert int(headers["content-length"]) == len(body)
    assert json.loads(body) == {"received": doc, "bytes": len(raw)}


def test_client_leaving_during_async_work(shared_daemon):
    for _ in range(3):
        s = shared_daemon.sock()
        s.sendall(req("GET", "/v1/slow?ms=100") + req("GET", "/v1/items/never"))
        s.close()
    time.sleep(0.3)  # the work finishes for nobody
    assert shared_daemon.running()
    assert shared_daemon.get_json("/v1/items/still-here") == (200, {"id": "still-here", "part": None})


def test_half_closed_client_gets_async_reply(shared_daemon):
    s = shared_daemon.sock()
    try:
        s.sendall(req("GET", "/v1/slow?ms=100"))
        s.shutdown(socket.SHUT_WR)  # done sending, still reading
        got, closed = recv_until(s, lambda x: False, 5)
    finally:
        s.close()
    (status, _, body), = parse_responses(got)
    assert status == 200 and json.loads(body) == {"slept_ms": 100}
    assert closed


def test_client_leaving_an_sse_stream(shared_daemon):
    for _ in range(3):
        s = shared_daemon.sock()
        s.sendall(req("GET", "/v1/sse?n=2"))
        recv_until(s, lambda x: b'"n":2' in x, 5)
        s.close()
    time.sleep(0.2)
    assert shared_daemon.request("GET", "/v1/echo")[0] == 200


def test_concurrent_clients(shared_daemon):
    results = []

    def client(k):
        conn = shared_daemon.connection(timeout=10)
        try:
            for i in range(10):
                conn.request("GET", "/v1/items/c%d-%d" % (k, i))
                resp = conn.getresponse()
                results.append((resp.status, json.loads(resp.read())["id"] == "c%d-%d" % (k, i)))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 160
    assert all(r == (200, True) for r in results)
