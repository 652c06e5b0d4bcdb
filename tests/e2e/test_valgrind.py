"""The RelaySync daemon under Valgrind (memcheck), on both engines: a
representative workload through every plugin (records with idempotency
keys, conflicts and tombstones, policies, the change feed, a batch push,
the queue), then SIGTERM.  Valgrind must report no invalid access, no use
of uninitialised memory and no leaked block (definitely or indirectly
lost) when the daemon exits.  ASan builds skip it (the two do not mix);
so does a machine without valgrind (contrib/install-deps installs it)."""
import os
import re
import shutil
import signal
import subprocess

import pytest

from conftest import SERVER, TOP_BUILDDIR, Daemon, finish_all
from relaysync_support import RelaySync, relaysync_sections
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


@pytest.mark.parametrize("engine", ["sqlite", "pgsql"])
def test_daemon_is_valgrind_clean(engine, request, tmp_path):
    from conftest import Storage
    pg = request.getfixturevalue("pg_server") if engine == "pgsql" else None
    storage = Storage(engine, tmp_path, pg)
    d = ValgrindDaemon(tmp_path / "daemon", relaysync_sections(storage, {"server": {"shutdown_timeout": "30s"}}))
    env = RelaySync(d, storage)
    try:
        d.start(timeout=90)
        workload(env)
        d.proc.send_signal(signal.SIGTERM)
        d.signalled = True
        rc = d.proc.wait(timeout=120)
    finally:
        if d.proc and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        d._close_files()
    with open(d.vg_log) as f:
        report = f.read()
    assert rc == 0, "exit %d; valgrind says:\n%s\n%s" % (rc, report[-6000:], d.log[-2000:])
    assert not re.search(r"(Invalid (read|write|free)|uninitialised|definitely lost|indirectly lost)", report), \
        report[-6000:]
