"""The daemon over time: graceful shutdown, SIGHUP reload and log reopening,
log formats, plugin timers, extra TCP listeners, services, authentication,
error styles and Server-Sent Events."""
import json
import os
import re
import signal
import socket
import time

import pytest

from conftest import (HOST, Daemon, dechunk, finish_all, free_port, metric_value, parse_responses, recv_until, req,
                      responses_complete, wait_closed)


def connect_refused(d):
    try:
        socket.create_connection((HOST, d.port), timeout=1).close()
    except OSError:
        return True
    return False


# ---------------------------------------------------------------- shutdown

def test_graceful_shutdown_finishes_requests_in_flight(make_daemon):
    d = make_daemon()
    busy = d.sock()
    busy.sendall(req("GET", "/v1/slow?ms=1500"))
    idle = d.sock()
    idle.sendall(req("GET", "/v1/echo"))
    got, _ = recv_until(idle, responses_complete(1), 5)
    assert parse_responses(got)[0][0] == 200
    time.sleep(0.3)  # the slow request is now in the thread pool
    t0 = time.monotonic()
    d.send_signal(signal.SIGTERM)
    try:
        # an idle keep-alive connection is closed at once
        assert wait_closed(idle, 2)
        # no new connections
        time.sleep(0.2)
        assert connect_refused(d)
        # the request in flight completes, with Connection: close
        got, _ = recv_until(busy, responses_complete(1), 5)
        (status, headers, body), = parse_responses(got)
        assert status == 200
        assert json.loads(body) == {"slept_ms": 1500}
        assert headers["connection"].lower() == "close"
        assert wait_closed(busy, 2)
    finally:
        busy.close()
        idle.close()
    assert d.proc.wait(10) == 0
    assert time.monotonic() - t0 < 4.0
    assert "stopped" in d.log


def test_sigint_stops_too(make_daemon):
    d = make_daemon()
    assert d.stop(signal.SIGINT) == 0


def test_shutdown_deadline_forces_exit(make_daemon):
    d = make_daemon(sections={"server": {"shutdown_timeout": "500ms"}})
    busy = d.sock()
    try:
        busy.sendall(req("GET", "/v1/slow?ms=4000"))
        time.sleep(0.2)
        t0 = time.monotonic()
        rc = d.stop(timeout=10)
        elapsed = time.monotonic() - t0
        # the connection is cut at the deadline, without a reply
        data, closed = recv_until(busy, lambda x: False, 1)
    finally:
        busy.close()
    assert closed and data == b""
    assert "shutdown deadline passed" in d.log
    assert rc == 0
    assert elapsed < 2.0, "exited %.1fs after SIGTERM; shutdown_timeout is 500ms" % elapsed


def test_shutdown_deadline_cuts_connections(make_daemon):
    """Whatever the exit time, the deadline cuts a request still running."""
    d = make_daemon(sections={"server": {"shutdown_timeout": "300ms"}})
    busy = d.sock()
    try:
        busy.sendall(req("GET", "/v1/slow?ms=2500"))
        time.sleep(0.2)
        t0 = time.monotonic()
        d.send_signal(signal.SIGTERM)
        data, closed = recv_until(busy, lambda x: False, 2)
        assert closed and data == b""
        assert time.monotonic() - t0 < 1.5
    finally:
        busy.close()
    assert d.proc.wait(10) == 0


def test_shutdown_ends_open_sse_streams(make_daemon):
    d = make_daemon()
    s = d.sock()
    try:
        s.sendall(req("GET", "/v1/sse?n=1"))
        got, _ = recv_until(s, lambda x: b'data: {"n":1}' in x, 5)
        d.send_signal(signal.SIGTERM)
        more, closed = recv_until(s, lambda x: False, 5)
    finally:
        s.close()
    assert closed
    assert (got + more).endswith(b"0\r\n\r\n")  # the stream was ended properly
    assert d.proc.wait(5) == 0


# ------------------------------------------------------------------ reload

def test_sighup_reloads_plugin_settings(make_daemon):
    d = make_daemon(sections={"echo": {"greeting": "hello"}, "server": {"name": "before"}})
    assert d.get_json("/v1/greeting") == (200, {"greeting": "hello"})
    d.sections["echo"]["greeting"] = "reloaded greeting"
    d.sections["server"]["name"] = "after"
    d.write_config()
    d.send_signal(signal.SIGHUP)
    d.wait_log("configuration reloaded")
    assert d.get_json("/v1/greeting") == (200, {"greeting": "reloaded greeting"})
    assert "reloaded: greeting is now 'reloaded greeting'" in d.log  # echo's reload()
    # the health document is cached for up to a second per worker
    time.sleep(1.1)
    assert [d.get_json("/")[1]["name"] for _ in range(6)] == ["after"] * 6
    assert d.running()


def test_sighup_reloads_limits(make_daemon):
    d = make_daemon(sections={"limits": {"max_body_size": "1m"}})
    body = b'{"pad": "' + b"x" * 2000 + b'"}'
    assert d.request("POST", "/v1/echo", body=body)[0] == 201
    d.sections["limits"]["max_body_size"] = "1k"
    d.write_config()
    d.send_signal(signal.SIGHUP)
    d.wait_log("configuration reloaded")
    assert d.request("POST", "/v1/echo", body=body)[0] == 413


def test_sighup_listen_and_plugins_change_only_on_restart(make_daemon):
    d = make_daemon()
    other = free_port()
    d.sections["server"]["listen"] = "%s:%d" % (HOST, other)
    d.sections["server"]["workers"] = "3"
    d.write_config(extra="[plugins]\nload += consumer\n")
    d.send_signal(signal.SIGHUP)
    log = d.wait_log("configuration reloaded")
    assert "listen addresses, workers and the plugin list change only on restart" in log
    assert " warn " in [l for l in log.splitlines() if "only on restart" in l][-1]
    assert d.request("GET", "/v1/echo")[0] == 200  # the old address still serves
    with pytest.raises(OSError):
        socket.create_connection((HOST, other), timeout=1).close()
    assert d.request("GET", "/v1/twice?v=1")[0] == 404  # consumer was not loaded
    assert d.running()


def test_sighup_changes_log_level(make_daemon):
    d = make_daemon()
    d.request("GET", "/v1/items/loud", headers={"X-Request-Id": "lvl-before"})
    d.wait_log("req=lvl-before")
    d.sections["log"]["level"] = "error"
    d.write_config()
    d.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    d.request("GET", "/v1/items/quiet", headers={"X-Request-Id": "lvl-after"})
    d.request("GET", "/v1/fail", headers={"X-Request-Id": "lvl-error"})
    log = d.wait_log("req=lvl-error")
    assert "req=lvl-error" in log
    assert "req=lvl-after" not in log


@pytest.mark.parametrize("bad, why", [
    ("[echo]\nbogus = 1\n", "unknown key 'bogus' in [echo]"),
    ("[limits]\nmax_body_size = lots\n", "bad value 'lots' for limits.max_body_size"),
    ("[echo]\ntick_ms = soon\n", "bad value 'soon' for echo.tick_ms"),
    ("[nosuch]\nx = 1\n", "unknown section [nosuch]"),
    ("[server\n", "malformed section header"),
], ids=["unknown-key", "bad-core-value", "bad-plugin-value", "unknown-section", "syntax"])
def test_invalid_reload_keeps_running_config(make_daemon, bad, why):
    d = make_daemon(sections={"echo": {"greeting": "original"}})
    d.sections["echo"]["greeting"] = "never applied"
    d.write_config(extra=bad)
    d.send_signal(signal.SIGHUP)
    log = d.wait_log("reload refused")
    refused = [l for l in log.splitlines() if "reload refused" in l]
    assert refused and why in refused[-1], log[-1500:]
    assert " error " in refused[-1]
    assert d.get_json("/v1/greeting") == (200, {"greeting": "original"})
    assert d.running()
    # a good configuration later is taken
    d.sections["echo"]["greeting"] = "fixed"
    d.write_config()
    d.send_signal(signal.SIGHUP)
    d.wait_log("greeting is now 'fixed'")
    assert d.get_json("/v1/greeting") == (200, {"greeting": "fixed"})


def test_sighup_reopens_log_file(make_daemon):
    d = make_daemon(start=False)
    log_path = os.path.join(d.workdir, "relay.log")
    d.sections["log"]["file"] = log_path
    d.write_config()
    d.start()
    d.request("GET", "/v1/items/before", headers={"X-Request-Id": "before-rotate"})
    d.wait_log("req=before-rotate", path=log_path)
    os.rename(log_path, log_path + ".1")  # what logrotate does
    d.request("GET", "/v1/items/between", headers={"X-Request-Id": "between-rotate"})
    d.wait_log("req=between-rotate", path=log_path + ".1")
    d.send_signal(signal.SIGHUP)
    d.wait_log("configuration reloaded", path=log_path)
    d.request("GET", "/v1/items/after", headers={"X-Request-Id": "after-rotate"})
    new = d.wait_log("req=after-rotate", path=log_path)
    with open(log_path + ".1") as f:
        old = f.read()
    assert "req=before-rotate" in old and "req=between-rotate" in old
    assert "req=after-rotate" in new and "req=after-rotate" not in old
    assert "configuration reloaded" in new
    assert d.log == ""  # nothing went to stderr
    assert d.stop() == 0


# -------------------------------------------------------------------- logs

def test_text_log_lines(make_daemon):
    d = make_daemon()
    d.request("GET", "/v1/echo?q=1", headers={"X-Request-Id": "text-log-1"})
    log = d.wait_log("req=text-log-1")
    line = [l for l in log.splitlines() if "req=text-log-1" in l][-1]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info \[echo\] req=text-log-1 "
                    r"GET /v1/echo\?q=1 200 \d+ [\d.]+ms$", line), line


def test_json_log_format(make_daemon):
    d = make_daemon(sections={"log": {"format": "json"}})
    _, headers, _ = d.request("GET", "/v1/items/j", headers={"X-Request-Id": "json-log-1"})
    assert headers["x-request-id"] == "json-log-1"
    d.request("GET", "/v1/fail")
    d.wait_log("json-log-1")
    d.wait_log("without a reply")
    entries = [json.loads(l) for l in d.log.splitlines()]  # every line is one JSON object
    assert entries
    for e in entries:
        assert {"ts", "level", "source", "msg"} <= set(e), e
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", e["ts"])
        assert e["level"] in ("error", "warn", "info", "debug")
    access = [e for e in entries if e.get("request_id") == "json-log-1"]
    assert access and access[-1]["source"] == "echo"
    assert access[-1]["msg"].startswith("GET /v1/items/j 200 ")
    errors = [e for e in entries if e["level"] == "error"]
    assert any("without a reply" in e["msg"] and e.get("request_id") for e in errors)
    assert any(e["source"] == "core" and "ready" in e["msg"] for e in entries)


def test_access_log_can_be_disabled(make_daemon):
    d = make_daemon(sections={"log": {"access": "false"}})
    d.request("GET", "/v1/items/quiet", headers={"X-Request-Id": "quiet-1"})
    d.request("GET", "/v1/fail", headers={"X-Request-Id": "loud-1"})
    log = d.wait_log("req=loud-1")
    assert "req=loud-1" in log  # errors are still logged
    assert "quiet-1" not in log


def test_log_level_error_hides_info(make_daemon):
    d = make_daemon(sections={"log": {"level": "error"}})
    d.request("GET", "/v1/fail", headers={"X-Request-Id": "lvl-1"})
    log = d.wait_log("req=lvl-1")
    assert "without a reply" in log
    assert " info " not in log


# ------------------------------------------------------- plugin facilities

def test_timers_tick(make_daemon):
    d = make_daemon(sections={"echo": {"tick_ms": "20ms"}})
    time.sleep(0.3)
    status, doc = d.get_json("/v1/ticks")
    assert status == 200
    assert doc["ticks"] > 0
    time.sleep(0.2)
    assert d.get_json("/v1/ticks")[1]["ticks"] > doc["ticks"]


def test_tcp_listener_echoes(make_daemon):
    d = make_daemon(sections={"echo": {"tcp_listen": "127.0.0.1:0"}})
    status, doc = d.get_json("/v1/ticks")
    port = doc["tcp_port"]
    assert port > 0
    assert "listening on 127.0.0.1:%d (tcp)" % port in d.log
    payload = bytes(range(256)) * 64  # 16 KiB, every byte value
    with socket.create_connection((HOST, port), timeout=5) as a, \
            socket.create_connection((HOST, port), timeout=5) as b:
        a.sendall(b"first")
        b.sendall(b"second")
        assert recv_until(a, lambda x: len(x) >= 5, 5)[0] == b"first"
        assert recv_until(b, lambda x: len(x) >= 6, 5)[0] == b"second"
        a.sendall(payload)
        assert recv_until(a, lambda x: len(x) >= len(payload), 5)[0] == payload
    assert d.request("GET", "/v1/echo")[0] == 200  # HTTP unaffected


def test_tcp_listener_bind_failure_fails_start(make_daemon):
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen(1)
        d = make_daemon(sections={"echo": {"tcp_listen": "127.0.0.1:%d" % busy.getsockname()[1]}},
                        start=False)
        d.start(wait=False)
        rc = d.proc.wait(10)
    assert rc == 3
    assert "plugin 'echo'" in d.log and "failed to start" in d.log


def test_service_between_plugins(make_daemon):
    d = make_daemon(sections={"plugins": {"load": "echo consumer"}})
    assert d.get_json("/v1/twice?v=21") == (200, {"twice": 42})
    assert d.get_json("/v1/twice?v=-4") == (200, {"twice": -8})
    assert d.get_json("/v1/twice") == (200, {"twice": 0})


# -------------------------------------------------------------------- auth

@pytest.mark.parametrize("path, token, status, expected", [
    ("/v1/private", None, 401, "authentication required"),
    ("/v1/private", "bad", 401, "invalid credentials"),
    ("/v1/private", "good", 200, {"subject": "tester", "tenant": "t1"}),
    ("/v1/private", "tenantless", 200, {"subject": "tester", "tenant": None}),
    ("/v1/tenant", None, 401, "authentication required"),
    ("/v1/tenant", "tenantless", 403, "this credential may not do that"),
    ("/v1/tenant", "good", 200, {"subject": "tester", "tenant": "t1"}),
    ("/v1/scoped", "good", 403, "this credential may not do that"),
    ("/v1/scoped", None, 401, "authentication required"),
    ("/v1/agents-only", "good", 403, "this credential may not do that"),  # kind "test", route wants "agent"
    ("/v1/agents-only", None, 401, "authentication required"),
    ("/v1/echo", "bad", 200, None),  # public routes never ask
])
def test_authentication_and_authorization(shared_daemon, path, token, status, expected):
    headers = {"X-Test-Token": token} if token else {}
    got, resp_headers, body = shared_daemon.request("GET", path, headers=headers)
    assert got == status
    doc = json.loads(body)
    if status == 401:
        assert resp_headers["www-authenticate"] == "Bearer"
        assert doc == {"error": {"code": "unauthorized", "message": expected}}
    elif status == 403:
        assert doc == {"error": {"code": "forbidden", "message": expected}}
    elif expected is not None:
        assert doc == expected


# ------------------------------------------------------------ error styles

STYLES = {
    "object": {
        "validation": {"error": {"code": "validation_failed", "message": "name: field required",
                                 "details": [{"loc": ["body", "name"], "msg": "field required",
                                              "type": "value_error.missing"}]}},
        "not_found": {"error": {"code": "thing.not_found", "message": "no thing 7"}},
        "json_status": 400,
    },
    "string": {
        "validation": {"error": "field required"},
        "not_found": {"error": "no thing 7"},
        "json_status": 400,
    },
    "detail": {
        "validation": {"detail": [{"loc": ["body", "name"], "msg": "field required",
                                   "type": "value_error.missing"}]},
        "not_found": {"detail": "no thing 7"},
        "json_status": 422,
    },
}


@pytest.fixture(scope="module")
def styled(tmp_path_factory):
    """One daemon per error style of the styles plugin."""
    daemons = {}
    try:
        for style in STYLES:
            d = Daemon(tmp_path_factory.mktemp("style-" + style), {"plugins": {"load": "styles"}},
                       overrides=["styles.style=" + style], workers="1")
            d.start()
            daemons[style] = d
        yield daemons
    finally:
        finish_all(daemons.values())


@pytest.mark.parametrize("style", list(STYLES))
def test_error_style_validation(styled, style):
    status, _, body = styled[style].request("POST", "/v1/styles/validate", body={"other": 1})
    assert status == 422
    assert json.loads(body) == STYLES[style]["validation"]
    status, _, body = styled[style].request("POST", "/v1/styles/validate", body={"name": "ok"})
    assert (status, json.loads(body)) == (200, {"name": "ok"})


@pytest.mark.parametrize("style", list(STYLES))
def test_error_style_plugin_error(styled, style):
    status, _, body = styled[style].request("GET", "/v1/styles/7")
    assert status == 404
    assert json.loads(body) == STYLES[style]["not_found"]


@pytest.mark.parametrize("style", list(STYLES))
def test_error_style_malformed_json(styled, style):
    status, _, body = styled[style].request("POST", "/v1/styles/validate", body=b'{"name": ',
                                            headers={"Content-Type": "application/json"})
    assert status == STYLES[style]["json_status"]
    doc = json.loads(body)
    if style == "object":
        assert doc["error"]["code"] == "invalid_json"
        message = doc["error"]["message"]
    else:
        assert list(doc) == ["error" if style == "string" else "detail"]
        message = doc["error" if style == "string" else "detail"]
    assert re.match(r"^malformed JSON at line 1, column \d+: ", message), message


@pytest.mark.parametrize("style", list(STYLES))
def test_error_style_does_not_change_core_errors(styled, style):
    """Outside the plugin's routes the server's style (object) answers."""
    status, _, body = styled[style].request("GET", "/nope")
    assert status == 404
    assert json.loads(body) == {"error": {"code": "not_found", "message": "no such route"}}


# --------------------------------------------------------------------- SSE

def parse_events(text):
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        ev = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                ev.setdefault("comment", []).append(line[1:].strip())
                continue
            field, _, value = line.partition(": ")
            ev[field] = value
        events.append(ev)
    return events


def test_sse_stream(shared_daemon):
    s = shared_daemon.sock()
    try:
        s.sendall(req("GET", "/v1/sse?n=3&end=1"))
        got, _ = recv_until(s, lambda x: x.endswith(b"0\r\n\r\n"), 5)
        head, _, rest = got.partition(b"\r\n\r\n")
        status, headers, _ = parse_responses(head + b"\r\n\r\n", head_request=True)[0]
        assert status == 200
        assert headers["content-type"] == "text/event-stream"
        assert headers["transfer-encoding"] == "chunked"
        assert headers["cache-control"] == "no-cache"
        assert "content-length" not in headers
        body, leftover, complete = dechunk(rest)
        assert complete and leftover == b""
        events = parse_events(body.decode())
        assert events == [{"event": "tick", "id": str(i), "data": json.dumps({"n": i}, separators=(",", ":"))}
                          for i in (1, 2, 3)]
        # the stream ended, the connection goes on
        s.sendall(req("GET", "/v1/items/after-sse"))
        got, closed = recv_until(s, responses_complete(1), 5)
        assert not closed
        assert json.loads(parse_responses(got)[0][2])["id"] == "after-sse"
    finally:
        s.close()


def test_sse_stream_then_pipelined_request(shared_daemon):
    """A request pipelined behind a stream is answered after it ends."""
    rs_data = b""
    with shared_daemon.sock() as s:
        s.sendall(req("GET", "/v1/sse?n=2&end=1") + req("GET", "/v1/items/behind"))
        rs_data, _ = recv_until(s, responses_complete(2), 5)
    rs = parse_responses(rs_data)
    assert [r[0] for r in rs] == [200, 200]
    assert len(parse_events(rs[0][2].decode())) == 2
    assert json.loads(rs[1][2])["id"] == "behind"


def test_sse_http10_is_close_delimited(shared_daemon):
    with shared_daemon.sock() as s:
        s.sendall(req("GET", "/v1/sse?n=2&end=1", version="HTTP/1.0"))
        got, closed = recv_until(s, lambda x: False, 5)
    assert closed
    head, _, body = got.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert [e["id"] for e in parse_events(body.decode())] == ["1", "2"]


def test_sse_heartbeat(make_daemon):
    d = make_daemon(sections={"limits": {"sse_heartbeat": "200ms"}})
    with d.sock() as s:
        s.sendall(req("GET", "/v1/sse?n=1"))
        got, closed = recv_until(s, lambda x: b": keep-alive\n\n" in x, 3)
    assert not closed
    assert b": keep-alive\n\n" in got


def test_sse_large_stream_to_a_reader(shared_daemon):
    """A client that reads gets all of a 4 MiB stream (stream_buffer 1m)."""
    with shared_daemon.sock() as s:
        s.sendall(req("GET", "/v1/sse?n=1&big=64"))
        got, closed = recv_until(s, lambda x: x.count(b"event: big\n") >= 64, 15)
    assert not closed
    assert got.count(b"event: big\n") == 64


def test_sse_non_reading_client_is_cut_off(make_daemon):
    d = make_daemon(sections={"limits": {"stream_buffer": "64k"}})
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((HOST, d.port))
        s.sendall(req("GET", "/v1/sse?n=3&big=64"))
        time.sleep(0.5)  # not reading
        # meanwhile the daemon answers others
        t0 = time.monotonic()
        assert d.request("GET", "/v1/echo")[0] == 200
        assert d.request("GET", "/v1/slow?ms=10")[0] == 200
        assert time.monotonic() - t0 < 2
        got, closed = recv_until(s, lambda x: False, 5)
    finally:
        s.close()
    assert closed, "the stream should have been cut off"
    assert got.count(b"event: big\n") < 64
    log = d.wait_log("SSE client not reading")
    assert "SSE client not reading" in log
    assert " warn " in [l for l in log.splitlines() if "SSE client not reading" in l][-1]
    # the connection is gone from the count (only the one asking is left;
    # the previous asker's close may still be on its way), the daemon fine
    deadline = time.monotonic() + 5
    while True:
        open_now = metric_value(d.metrics(), "relay_http_open_connections")
        if open_now == 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert open_now == 1
    assert d.request("GET", "/")[0] == 200
