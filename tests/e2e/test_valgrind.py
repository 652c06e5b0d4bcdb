"""The RelaySync daemon under Valgrind (memcheck), on both engines: a
representative workload through every plugin (records with idempotency
keys, conflicts and tombstones, policies, the change feed, a batch push,
the queue, webhook deliveries to a loopback receiver (answered, failed,
and one still in flight at shutdown), the audit log, its live stream, an
evidence bundle and its verification), then SIGTERM.  Valgrind must report no invalid access, no use
of uninitialised memory and no leaked block (definitely or indirectly
lost) when the daemon exits.  ASan builds skip it (the two do not mix);
so does a machine without valgrind (contrib/install-deps installs it)."""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import SERVER, TOP_BUILDDIR, Daemon, finish_all
from relaysync_support import PLUGINS, RelaySync, relaysync_sections
from users_support import asan_build

VALGRIND = shutil.which("valgrind")
LIBTOOL = os.path.join(TOP_BUILDDIR, "libtool")

pytestmark = [pytest.mark.skipif(not VALGRIND, reason="valgrind is not installed"),
              pytest.mark.skipif(asan_build(), reason="AddressSanitizer builds do not run under valgrind")]


class ValgrindDaemon(Daemon):
    """relay-server started by libtool (the build tree's wrapper) under memcheck."""

    def _spawn(self, wait):
        self.vg_log = os.path.join(self.workdir, "valgrind.log")
        args = [LIBTOOL, "--mode=execute", VALGRIND, "--quiet", "--error-exitcode=99", "--leak-check=full",
                "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
                "--track-origins=no", "--log-file=" + self.vg_log, SERVER, "-c", self.conf_path]
        for o in self.overrides:
            args += ["-o", o]
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(args, stdout=self._out, stderr=self._err, cwd=self.workdir)
        self.signalled = not wait


class Receiver(BaseHTTPRequestHandler):
    """/ok answers 200, /fail 500, /slow holds the delivery past shutdown."""
    hits = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Receiver.hits.append(self.path)
        if self.path == "/slow":
            time.sleep(15)
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


def plugin_workload(env, admin, port):
    """Webhooks and audit: deliveries (one still in flight at shutdown),
    the audit list, stream, receipt, verification and a bundle."""
    for path, events in (("/ok", ["record.*"]), ("/fail", ["record.created"]), ("/slow", ["record.updated"])):
        r = env.api("POST", "/v1/webhooks", {"url": "http://127.0.0.1:%d%s" % (port, path), "events": events},
                    key=admin)
        assert r.status == 201, r
    stream = socket.create_connection(("127.0.0.1", env.d.port))
    stream.sendall(b"GET /v1/audit/stream HTTP/1.1\r\nHost: x\r\nX-API-Key: " + admin.encode() + b"\r\n\r\n")
    rec = env.create_record(admin, {"title": "hooked", "type": "inspection"}).body
    env.patch_record(admin, rec["id"], {"title": "hooked again"}, causal=rec["causal"])
    env.wait_for(lambda: "/ok" in Receiver.hits and "/fail" in Receiver.hits and "/slow" in Receiver.hits, timeout=60)
    stream.settimeout(30)
    got = b""
    while b"event: audit" not in got:  # headers, the opening comment, then entries, in however many reads
        chunk = stream.recv(65536)
        assert chunk, got
        got += chunk
    stream.close()
    entries = env.api("GET", "/v1/audit?limit=5", key=admin)
    assert entries.status == 200 and entries.body["entries"], entries
    one = env.api("GET", "/v1/audit/events/" + entries.body["entries"][0]["id"], key=admin)
    assert one.status == 200 and one.body["receipt"]["signature"], one
    assert env.api("GET", "/v1/audit/verify", key=admin).body["valid"] is True
    b = env.api("POST", "/v1/evidence/bundles", {"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"},
                key=admin)
    assert b.status == 201, b
    assert env.api("GET", "/v1/evidence/bundles/%s/verify" % b.body["id"], key=admin).body["valid"] is True
    dl = urllib.request.Request("http://127.0.0.1:%d/v1/evidence/bundles/%s" % (env.d.port, b.body["id"]),
                                headers={"X-API-Key": admin})
    with urllib.request.urlopen(dl, timeout=60) as r:
        assert r.status == 200 and r.read(2) == b"\x1f\x8b"  # gzip


def workload(env):
    t = env.new_tenant()
    admin = t.key("admin")
    env.post_policy(admin, "defer_media", "size > 5120", "queue=wifi", expect=201)
    a = env.create_record(admin, {"title": "Pressure check", "type": "inspection", "site": "alpha"},
                          idem="vg-1").body
    env.create_record(admin, {"title": "Pressure check", "type": "inspection", "site": "alpha"}, idem="vg-1")
    big = env.create_record(admin, {"title": "photo", "type": "media", "payload": {"b": "x" * 6000}}).body
    a2 = env.patch_record(admin, a["id"], {"status": "synced", "payload": {"k": [1, 2]}}, causal=a["causal"]).body
    env.patch_record(admin, a["id"], {"title": "stale"}, causal=a["causal"], expect=409)
    env.delete_record(admin, big["id"])
    env.list_records(admin, status="synced")
    env.changes_all(admin, network="cellular")
    env.push(admin, [{"op": "create", "idempotency_key": "vg-2", "record": {"title": "n", "type": "t"}},
                     {"op": "update", "id": a["id"], "causal": a2["causal"], "patch": {"title": "pushed"}},
                     {"op": "delete", "id": "rec_00000000000000000000000000"}])
    env.queue(admin)
    assert env.api("POST", "/v1/records", key=admin, raw=b"{not json").status == 400
    return admin


@pytest.mark.parametrize("engine", ["sqlite", "pgsql"])
def test_daemon_is_valgrind_clean(engine, request, tmp_path):
    from conftest import Storage
    pg = request.getfixturevalue("pg_server") if engine == "pgsql" else None
    storage = Storage(engine, tmp_path, pg)
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    receiver.daemon_threads = True
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    Receiver.hits = []
    sections = {"server": {"shutdown_timeout": "30s"},
                "plugins": {"load": PLUGINS + " webhooks audit"},
                "webhooks": {"allow_private_targets": "true", "rate_limit": "0"},
                "audit": {"checkpoint_every": "3", "rate_limit": "0"}}
    d = ValgrindDaemon(tmp_path / "daemon", relaysync_sections(storage, sections))
    env = RelaySync(d, storage)
    try:
        d.start(timeout=90)
        admin = workload(env)
        plugin_workload(env, admin, receiver.server_address[1])
        d.proc.send_signal(signal.SIGTERM)
        d.signalled = True
        rc = d.proc.wait(timeout=120)
    finally:
        receiver.shutdown()
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d._close_files()
    with open(d.vg_log) as f:
        report = f.read()
    assert rc == 0, "exit %d; valgrind says:\n%s\n%s" % (rc, report[-6000:], d.log[-2000:])
    assert not re.search(r"(Invalid (read|write|free)|uninitialised|definitely lost|indirectly lost)", report), \
        report[-6000:]
