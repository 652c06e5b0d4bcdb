"""Overload and slow clients against RelaySync, on SQLite and PostgreSQL,
with the daemon's memory (VmRSS) measured through every scenario.

What the core's own tests already cover with the echo plugin is not
repeated here: one connection over [limits] max_connections gets a
well-formed 503 "overloaded" (test_limits.py), one slow or trickling head
and one stalled body get 408 (test_limits.py), one SSE client that does not
read is cut off (test_lifecycle.py), and a flood of the users plugin's
routes is limited per tenant (test_users_limits.py).  Here:

  - a storm of connections over max_connections while the connections
    already open keep creating records and pulling the feed;
  - slowloris on RelaySync routes, many at once: heads trickled line by
    line and byte by byte, and record bodies trickled byte by byte, each
    with an Idempotency-Key: all get 408 within the configured timeouts,
    nothing is stored, no key is kept, and a client served meanwhile never
    waits;
  - many SSE clients that never read, each cut off at [limits]
    stream_buffer (RelaySync has no SSE route of its own: the echo test
    plugin's /v1/sse serves the stream, the buffering is the core's);
  - a client that pipelines list requests and never reads the answers;
  - a flood of POST /v1/records from one tenant: 429 with Retry-After and
    the RateLimit headers, nothing stored for a refused write, while a
    second tenant at a modest rate and the first tenant's other plugin
    (sync) are served.

Memory: VmRSS is sampled every 20 ms from before a scenario until after
it, and its growth must stay under RSS_BOUND (64 MiB; more under
AddressSanitizer, whose quarantine keeps freed memory): memory that grows
with the load is the bug, not a few MiB."""
import http.client
import json
import socket
import threading
import time

import pytest

from conftest import HOST, metric_value, parse_responses, recv_until, req, responses_complete
from relaysync_support import shared_env, sql_quote, table_count, wait_for
from relaysync_support import _envs, rs_daemon  # noqa: F401 (fixtures)
from users_support import asan_build

MIB = 1024 * 1024
RSS_BOUND = (64 + (256 if asan_build() else 0)) * MIB
PIPELINE_BOUND = (16 + (256 if asan_build() else 0)) * MIB
TIMEOUT_S = 1.0  # header_timeout and body_timeout of the module's daemon
MAX_CONNS = 24
SLOW_CLIENTS = 16


@pytest.fixture
def env(engine, request, _envs, tmp_path_factory):
    """The module's daemon: short head and body timeouts, a connection cap."""
    return shared_env(engine, request, _envs, tmp_path_factory, tag="overload", sections={
        "limits": {"max_connections": str(MAX_CONNS), "header_timeout": "1s", "body_timeout": "1s",
                   "idle_timeout": "10s"}})


# ---------------------------------------------------------------- memory

def rss_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS for %d" % pid)


class rss_watch:
    """`with rss_watch(d, "what") as m:` samples D's VmRSS every 20 ms; at
    the end asserts that neither its peak nor its last value grew more
    than BOUND over the value before.  m.before, m.peak, m.after."""

    def __init__(self, d, what, bound=RSS_BOUND):
        self.d, self.what, self.bound = d, what, bound
        self.stop = threading.Event()

    def __enter__(self):
        self.before = self.peak = rss_bytes(self.d.pid)
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_bytes(self.d.pid))
            except (OSError, AssertionError):
                return

    def over(self):
        return self.peak - self.before > self.bound

    def __exit__(self, exc_type, *exc):
        self.stop.set()
        self.thread.join(5)
        self.after = rss_bytes(self.d.pid)
        self.peak = max(self.peak, self.after)
        print("RSS %s: before %.1f MiB, peak %.1f MiB, after %.1f MiB"
              % (self.what, self.before / MIB, self.peak / MIB, self.after / MIB))
        if exc_type is None:
            assert self.peak - self.before <= self.bound, \
                "%s: VmRSS grew from %.1f MiB to %.1f MiB (bound +%d MiB)" % (
                    self.what, self.before / MIB, self.peak / MIB, self.bound // MIB)
        return False


# ---------------------------------------------------------------- helpers

def open_connections(d):
    """Connections the daemon counts as open, besides the one asking (None
    when /metrics itself was refused)."""
    status, _, body = d.request("GET", "/metrics")
    if status != 200:
        return None
    return int(metric_value(body.decode(), "relay_http_open_connections")) - 1


def wait_connections(d, n, timeout=5.0):
    return wait_for(lambda: open_connections(d) == n, timeout, 0.05)


def error_code(body):
    doc = json.loads(body)
    assert set(doc) == {"error"} and isinstance(doc["error"].get("message"), str), doc
    return doc["error"]["code"]


def record_body(i, tag="slow"):
    return json.dumps({"title": "%s %d" % (tag, i), "type": "overload", "payload": {"i": i}}).encode()


class Prober(threading.Thread):
    """A well-behaved client on its own keep-alive connection: GET
    /v1/records every 50 ms until stopped.  .results: (status, seconds)."""

    def __init__(self, env, key):
        super().__init__(daemon=True)
        self.env, self.key = env, key
        self.results, self.errors = [], []
        self.halt = threading.Event()

    def run(self):
        conn = http.client.HTTPConnection(self.env.d.host, self.env.d.port, timeout=5)
        try:
            while not self.halt.is_set():
                t0 = time.monotonic()
                conn.request("GET", "/v1/records?limit=5", headers={"X-API-Key": self.key})
                r = conn.getresponse()
                r.read()
                self.results.append((r.status, time.monotonic() - t0))
                self.halt.wait(0.05)
        except Exception as e:  # reported by check()
            self.errors.append(repr(e))
        finally:
            conn.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.halt.set()
        self.join(10)
        return False

    def check(self, slowest=1.0):
        assert not self.errors, self.errors
        assert len(self.results) >= 3, self.results
        assert {s for s, _ in self.results} == {200}, self.results
        worst = max(t for _, t in self.results)
        assert worst < slowest, "a client was kept waiting %.3fs" % worst


# ====================================================== max_connections

def test_connection_storm_over_the_maximum(env):
    """MAX_CONNS keep-alive clients hold every slot; 60 more connections
    arrive at once: each is answered 503 "overloaded" and closed (or closed
    outright), none hangs or is served, while the MAX_CONNS clients create
    records and pull the feed without a failure.  Once they leave, new
    connections are served again."""
    t = env.new_tenant()
    assert wait_connections(env.d, 0), open_connections(env.d)
    socks = []
    try:
        with rss_watch(env.d, "connection storm"):
            for i in range(MAX_CONNS):
                s = env.d.sock()
                s.sendall(req("GET", "/v1/records", [("X-API-Key", t.admin)]))
                got, closed = recv_until(s, responses_complete(1), 5)
                assert not closed and parse_responses(got)[0][0] == 200, got[:200]
                socks.append(s)
            refused, stuck = [], []

            def knock():
                try:
                    with socket.create_connection((env.d.host, env.d.port), timeout=5) as s:
                        s.sendall(req("GET", "/v1/records", [("X-API-Key", t.admin)]))
                        got, closed = recv_until(s, lambda x: False, 4)
                except (ConnectionResetError, BrokenPipeError):
                    got, closed = b"", True
                (refused if closed else stuck).append(got)

            storm = [threading.Thread(target=knock) for _ in range(60)]
            for th in storm:
                th.start()
            # meanwhile the clients holding the slots are served as usual
            for i, s in enumerate(socks):
                s.sendall(req("POST", "/v1/records", [("X-API-Key", t.admin), ("Content-Type", "application/json"),
                                                      ("Idempotency-Key", "storm-%d" % i)], record_body(i, "storm"))
                          + req("GET", "/v1/sync/changes?limit=5", [("X-API-Key", t.admin)]))
                got, closed = recv_until(s, responses_complete(2), 5)
                assert [r[0] for r in parse_responses(got)] == [201, 200], got[:300]
            for th in storm:
                th.join(10)
        assert not stuck, "connections over the limit left open: %r" % stuck[:3]
        assert len(refused) == 60
        for got in refused:
            if got:
                (status, headers, body), = parse_responses(got)
                assert status == 503 and error_code(body) == "overloaded", got
        assert sum(1 for g in refused if g), "no connection over the limit was told why"
    finally:
        for s in socks:
            s.close()
    assert table_count(env.storage, "records_records", "tenant = " + sql_quote(t.id)) == MAX_CONNS
    assert wait_connections(env.d, 0), open_connections(env.d)
    assert env.list_page(t.admin, limit=1).status == 200


# ============================================================ slowloris

def trickle(clients, piece_of, deadline, pause):
    """Drives non-blocking CLIENTS until DEADLINE or until all are closed:
    every PAUSE seconds each open client sends piece_of(tick, i, c) (b""
    for nothing this time) and keeps what it receives; c["closed"] is the
    time from c["t0"] at which the server closed it.  Sockets are closed
    at the end."""
    tick = 0
    while time.monotonic() < deadline and any(c["closed"] is None for c in clients):
        tick += 1
        for i, c in enumerate(clients):
            if c["closed"] is not None:
                continue
            try:
                piece = piece_of(tick, i, c)
                if piece:
                    c["sock"].send(piece)
                while True:
                    chunk = c["sock"].recv(65536)
                    if not chunk:
                        c["closed"] = time.monotonic() - c["t0"]
                        break
                    c["got"] += chunk
            except BlockingIOError:
                pass
            except OSError:
                c["closed"] = time.monotonic() - c["t0"]
        time.sleep(pause)
    for c in clients:
        c["sock"].close()


def test_slowloris_heads(env):
    """SLOW_CLIENTS heads trickled at once, half a header line every 150 ms,
    half one byte every 50 ms (request line included): each gets 408 and
    is closed within header_timeout (+ the sweep's slack), while a client
    making requests meanwhile is answered at once every time."""
    t = env.new_tenant()
    head = req("GET", "/v1/records", [("X-API-Key", t.admin)])[:-2]  # never ends
    with rss_watch(env.d, "slowloris heads"), Prober(env, t.viewer) as probe:
        clients = []
        for i in range(SLOW_CLIENTS):
            s = env.d.sock()
            s.setblocking(False)
            clients.append({"sock": s, "t0": time.monotonic(), "got": b"", "closed": None, "sent": 0,
                            "lines": i % 2 == 0})
        def piece_of(tick, i, c):
            if c["lines"] and tick % 3 == 1:
                c["sent"] += 1
                return head[c["sent"] - 1:] if c["sent"] == 1 else b"X-Slow-%d: v\r\n" % tick
            if not c["lines"]:
                c["sent"] += 1
                return head[c["sent"] - 1:c["sent"]] or b"X"
            return b""
        trickle(clients, piece_of, time.monotonic() + TIMEOUT_S + 3, 0.05)
    probe.check()
    for c in clients:
        assert c["closed"] is not None, "a trickled head was never cut off (%d pieces sent)" % c["sent"]
        assert c["closed"] < TIMEOUT_S + 1.5, c["closed"]
        (status, headers, body), = parse_responses(c["got"])
        assert status == 408 and error_code(body) == "request_timeout", c["got"]


def test_slowloris_bodies_store_nothing(env):
    """SLOW_CLIENTS POST /v1/records with an Idempotency-Key each, the body
    trickled one byte every 100 ms: 408 within body_timeout, closed, no
    record, event or idempotency key stored; the same requests sent at
    normal speed are then created (201, not replays)."""
    t = env.new_tenant()
    bodies = [record_body(i) for i in range(SLOW_CLIENTS)]
    where = "tenant = " + sql_quote(t.id)
    tables = ("records_records", "relay_events", "relay_idempotency", "relay_jobs")
    counts = {table: table_count(env.storage, table, where) for table in tables}
    assert counts["records_records"] == 0
    with rss_watch(env.d, "slowloris bodies"), Prober(env, t.viewer) as probe:
        clients = []
        for i, body in enumerate(bodies):
            s = env.d.sock()
            s.sendall(req("POST", "/v1/records", [("X-API-Key", t.admin), ("Content-Type", "application/json"),
                                                  ("Idempotency-Key", "slow-%d" % i),
                                                  ("Content-Length", str(len(body)))]))
            s.setblocking(False)
            clients.append({"sock": s, "t0": time.monotonic(), "got": b"", "closed": None, "sent": 0})
        def piece_of(tick, i, c):
            if c["sent"] >= len(bodies[i]) - 1:  # never the last byte
                return b""
            c["sent"] += 1
            return bodies[i][c["sent"] - 1:c["sent"]]
        trickle(clients, piece_of, time.monotonic() + TIMEOUT_S + 3, 0.1)
    probe.check()
    for c in clients:
        assert c["closed"] is not None and c["closed"] < TIMEOUT_S + 1.5, c
        (status, headers, body), = parse_responses(c["got"])
        assert status == 408 and error_code(body) == "request_timeout", c["got"]
        assert headers["connection"].lower() == "close"
    assert {table: table_count(env.storage, table, where) for table in tables} == counts
    for i, body in enumerate(bodies):
        r = env.create_record(t.admin, json.loads(body), idem="slow-%d" % i, expect=201)
        assert not r.replayed


# ==================================================== clients that never read

def test_sse_clients_that_never_read_are_cut_off(make_daemon):
    """16 clients ask for a 4 MiB event stream each and never read (a
    4 KiB receive buffer): every one is cut off at [limits] stream_buffer
    (256k) with a warning, the daemon answers others meanwhile, and its
    memory stays bounded."""
    d = make_daemon(sections={"plugins": {"load": "echo"}, "limits": {"stream_buffer": "256k"}})
    socks = []
    try:
        with rss_watch(d, "16 SSE non-readers"):
            for _ in range(16):
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                s.connect((HOST, d.port))
                s.sendall(req("GET", "/v1/sse?n=1&big=64"))
                socks.append(s)
            log = wait_for(lambda: d.log.count("SSE client not reading") >= 16 and d.log, 10)
            assert log and log.count("SSE client not reading") == 16, d.log[-2000:]
            t0 = time.monotonic()
            assert d.request("GET", "/v1/echo")[0] == 200
            assert time.monotonic() - t0 < 1
            # the daemon let go of every one of them (reading them to the end
            # through a 4 KiB window would take seconds)
            assert wait_connections(d, 0), open_connections(d)
        for s in socks:
            assert s.recv(12) == b"HTTP/1.1 200"
    finally:
        for s in socks:
            s.close()
    line = [l for l in d.log.splitlines() if "SSE client not reading" in l][-1]
    assert "stream_buffer is 262144" in line, line


def test_pipelining_client_that_never_reads(env):
    """A client pipelines 40 GET /v1/records (each answer about 1 MiB:
    five records of 200 KB) in one write of 5 KB and never reads: the
    daemon must stop producing answers once a bounded amount waits for the
    client (the core stops reading at 256 KiB of unsent output), not build
    all 40 MiB of them in memory.  The bound here is 16 MiB."""
    t = env.new_tenant()
    for i in range(5):
        env.create_record(t.admin, {"title": "big %d" % i, "type": "overload", "payload": {"blob": "x" * 200000}})
    assert len(json.dumps(env.list_page(t.admin, limit=5).body)) > 1000000
    pipeline = req("GET", "/v1/records?limit=5", [("X-API-Key", t.admin)]) * 40
    assert len(pipeline) < 16 * 1024
    s = socket.socket()
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect((HOST, env.d.port))
        with rss_watch(env.d, "pipelining non-reader", bound=PIPELINE_BOUND) as m:
            s.sendall(pipeline)
            # give the daemon the time to build every answer, if it does
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not m.over():
                time.sleep(0.05)
    finally:
        s.close()


# ==================================================== one tenant floods

def test_flood_from_one_tenant(rs_daemon):
    """[records] rate_limit = 20 (burst 20), [sync] rate_limit = 20: tenant
    A posts 160 records from 8 connections as fast as it can.  A gets 20
    through plus what refills meanwhile, the rest 429 with Retry-After and
    RateLimit-* headers in RelaySync's error shape; a refused write stores
    nothing (row, event, idempotency key); tenant B, creating and listing
    records every 150 ms meanwhile, is never refused, and neither is A's
    own use of the sync plugin (its own bucket).  After Retry-After, a
    refused key is accepted as a new write."""
    env = rs_daemon({"records": {"rate_limit": "20"}, "sync": {"rate_limit": "20"}}, workers="4")
    a, b = env.new_tenant("Flood A"), env.new_tenant("Flood B")
    results, lock = [], threading.Lock()
    left = list(range(160))
    b_results, a_sync, halt = [], [], threading.Event()

    def flooder():
        conn = http.client.HTTPConnection(env.d.host, env.d.port, timeout=10)
        try:
            while True:
                with lock:
                    if not left:
                        return
                    i = left.pop()
                conn.request("POST", "/v1/records", body=record_body(i, "flood"),
                             headers={"X-API-Key": a.admin, "Content-Type": "application/json",
                                      "Idempotency-Key": "flood-%d" % i})
                r = conn.getresponse()
                body = r.read()
                with lock:
                    results.append((i, r.status, {k.lower(): v for k, v in r.getheaders()}, body))
        finally:
            conn.close()

    def tenant_b():
        n = 0
        while not halt.is_set():
            n += 1
            b_results.append(env.create_record(b.admin, {"title": "calm %d" % n, "type": "overload"},
                                               idem="calm-%d" % n, expect=None).status)
            b_results.append(env.list_page(b.admin, limit=5, expect=None).status)
            a_sync.append(env.changes(a.viewer, limit=5, expect=None).status)
            halt.wait(0.15)

    with rss_watch(env.d, "flood from one tenant"):
        tb = threading.Thread(target=tenant_b)
        tb.start()
        time.sleep(0.15)
        t0 = time.monotonic()
        threads = [threading.Thread(target=flooder) for _ in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
        halt.set()
        tb.join(10)
    assert len(results) == 160
    ok = [r for r in results if r[1] == 201]
    limited = [r for r in results if r[1] == 429]
    assert len(ok) + len(limited) == 160, sorted({r[1] for r in results})
    bound = 20 + 20 * elapsed + 1
    print("flood: %d created, %d refused in %.3fs" % (len(ok), len(limited), elapsed))
    assert 20 <= len(ok) <= bound, "%d of 160 created in %.3fs (expected 20..%.1f)" % (len(ok), elapsed, bound)
    assert limited
    for i, status, hdrs, body in limited:
        assert int(hdrs["retry-after"]) >= 1, hdrs
        assert hdrs["ratelimit-limit"] == "20" and hdrs["ratelimit-remaining"] == "0", hdrs
        assert int(hdrs["ratelimit-reset"]) >= 1, hdrs
        assert error_code(body) == "rate_limited"
    for i, status, hdrs, body in ok:
        assert hdrs["ratelimit-limit"] == "20" and "retry-after" not in hdrs, hdrs
    # B and A's sync use were never refused
    assert b_results and set(b_results) <= {200, 201}, b_results
    assert a_sync and set(a_sync) == {200}, a_sync
    # only the accepted writes left anything behind
    where = "tenant = " + sql_quote(a.id)
    created = {json.loads(body)["id"] for _, _, _, body in ok}
    assert {r["id"] for r in env.record_rows(a.id)} == created
    assert {e["payload"]["id"] for e in env.event_rows(a.id, "record.created")} == created
    assert table_count(env.storage, "relay_idempotency", where) == len(ok)
    # after Retry-After a refused key is a new write, not a replay of the 429
    time.sleep(max(int(h["retry-after"]) for _, _, h, _ in limited))
    i = limited[0][0]
    r = env.create_record(a.admin, json.loads(record_body(i, "flood")), idem="flood-%d" % i, expect=201)
    assert not r.replayed
