"""Crash durability of RelaySync writes, on SQLite and PostgreSQL.

Several threads POST /v1/records as fast as the daemon answers, each
record with an Idempotency-Key of its own (the key is also in the title,
so rows can be counted per key), and the daemon is killed with SIGKILL at
a random moment 0.3-1.5 s after the round's first acknowledged write.
Three rounds per engine, one daemon restarted on the same database each
time.  After every restart:

  - every write that got a 2xx is in records_records exactly once, with
    the id its answer gave;
  - every write that got no answer (or a 503, which acknowledges nothing),
    sent again with the same key and body, gets 201 (a replay when the
    first attempt had committed) and leaves exactly one row per key;
    acknowledged keys sent again are replays of the first answer;
  - relay_events holds exactly one record.created per record (the outbox
    commits with the change, never twice, never without it);
  - the outbox is delivered after the crash: the sync plugin's subscriber
    turns each record.created into a record.sync job (relay_jobs, target =
    the record id) and every record reaches status "synced"; no job is
    dead.

Jobs that were running when the daemon died keep their lease until it
runs out, so the daemon runs with [jobs] lease = 2s (the default is 60s):
the test waits for the lease, it does not shorten what is checked.  The
random moments come from a seed printed with every failure
(RELAY_CRASH_SEED=<n> repeats a run)."""
import http.client
import json
import os
import random
import threading
import time

from relaysync_support import RECORD_ID_RE, sql_quote, wait_for
from relaysync_support import rs_daemon  # noqa: F401 (fixtures)

ROUNDS = 3
WRITERS = 6
KILL_WINDOW = (0.3, 1.5)
SYNC_TIMEOUT = 30.0


def fields_for(key):
    return {"title": "crash " + key, "type": "crash", "payload": {"key": key}}


def key_of(title):
    return title[len("crash "):]


class Traffic:
    """WRITERS threads posting records until the daemon dies under them.
    acked: key -> record id of every 201; lost: keys sent without an
    answer, or answered 503 (busy: retry), which acknowledges nothing;
    refused: (key, status, body) of any other answer."""

    def __init__(self, env, api_key, tag):
        self.env, self.api_key, self.tag = env, api_key, tag
        self.acked, self.lost, self.refused, self.busy = {}, [], [], 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.first_ack = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(WRITERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)
        assert not any(t.is_alive() for t in self.threads), "a writer thread hung"

    def run(self, n):
        d = self.env.d
        conn = None
        i = 0
        while not self.stop.is_set():
            key = "%s-w%d-%05d" % (self.tag, n, i)
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(d.host, d.port, timeout=10)
                conn.request("POST", "/v1/records", body=json.dumps(fields_for(key)),
                             headers={"Content-Type": "application/json", "X-API-Key": self.api_key,
                                      "Idempotency-Key": key})
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException):
                with self.lock:
                    self.lost.append(key)
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(0.01)  # the daemon is gone: do not spin until the test stops us
                continue
            with self.lock:
                if 200 <= r.status < 300:
                    self.acked[key] = json.loads(data)["id"]
                    self.first_ack.set()
                elif r.status == 503 and r.getheader("Retry-After"):
                    self.lost.append(key)
                    self.busy += 1
                else:
                    self.refused.append((key, r.status, data[:200]))
        if conn is not None:
            conn.close()


def kill9(d):
    """SIGKILL, as a crash: no shutdown, nothing flushed by the daemon."""
    d.signalled = True
    d.proc.kill()
    d.proc.wait(10)
    d._close_files()


def rows_by_key(env, tenant_id):
    """{idempotency key: [record ids]} of the tenant's records."""
    out = {}
    for row in env.rows("records_records", "tenant = " + sql_quote(tenant_id)):
        out.setdefault(key_of(row["title"]), []).append(row["id"])
    return out


def created_events(env, tenant_id):
    """{record id: number of record.created events}."""
    out = {}
    for ev in env.event_rows(tenant_id, "record.created"):
        out[ev["payload"]["id"]] = out.get(ev["payload"]["id"], 0) + 1
    return out


def not_synced(env, tenant_id):
    return int(env.storage.scalar("SELECT COUNT(*) FROM records_records WHERE tenant = %s AND status <> 'synced'"
                                  % sql_quote(tenant_id)))


def test_kill_9_under_write_load(rs_daemon, engine):
    seed = int(os.environ.get("RELAY_CRASH_SEED") or random.randrange(1 << 30))
    rnd = random.Random(seed)
    env = rs_daemon({"jobs": {"lease": "2s"}})
    tenant = env.new_tenant("Crash Field Ops")
    acked, lost_total, stats = {}, set(), []
    for rnd_no in range(ROUNDS):
        where = "engine %s, seed %d, round %d" % (engine, seed, rnd_no)
        traffic = Traffic(env, tenant.admin, "r%d" % rnd_no)
        delay = rnd.uniform(*KILL_WINDOW)
        traffic.start()
        # the random moment counts from the first acknowledged write, not
        # from a daemon still busy with what the last crash left
        started = traffic.first_ack.wait(20)
        time.sleep(delay)
        kill9(env.d)
        traffic.join()
        assert started and traffic.acked, "%s: no write was acknowledged" % where
        assert not traffic.refused, "%s: answers other than 2xx and 503 before the crash: %r" % (
            where, traffic.refused[:5])
        acked.update(traffic.acked)
        lost = [k for k in traffic.lost if k not in traffic.acked]
        lost_total.update(lost)
        env.d.start(timeout=30)

        # every acknowledged write is there exactly once, under the id it was given
        by_key = rows_by_key(env, tenant.id)
        missing = [k for k in acked if k not in by_key]
        assert not missing, "%s: %d acknowledged writes lost, e.g. %r" % (where, len(missing), missing[:5])
        twice = {k: v for k, v in by_key.items() if len(v) != 1}
        assert not twice, "%s: keys with several rows: %r" % (where, list(twice.items())[:5])
        wrong = [k for k, rid in acked.items() if by_key[k] != [rid]]
        assert not wrong, "%s: rows under other ids than answered: %r" % (where, wrong[:5])

        # the unanswered ones, sent again: one row each, whether they had committed or not
        replayed = fresh = 0
        for key in lost:
            r = env.create_record(tenant.admin, fields_for(key), idem=key, expect=201)
            assert RECORD_ID_RE.match(r.body["id"]) and r.body["title"] == "crash " + key, r.body
            replayed += r.replayed
            fresh += not r.replayed
            acked[key] = r.body["id"]
        # acknowledged ones sent again are replays of the first answer
        for key in rnd.sample(sorted(traffic.acked), min(10, len(traffic.acked))):
            r = env.create_record(tenant.admin, fields_for(key), idem=key, expect=201)
            assert r.replayed and r.body["id"] == acked[key], (where, key, r)
        by_key = rows_by_key(env, tenant.id)
        assert sorted(by_key) == sorted(acked), "%s: rows %d, keys %d" % (where, len(by_key), len(acked))
        assert all(len(v) == 1 for v in by_key.values()), where
        stats.append((round(delay, 2), len(traffic.acked), len(lost), traffic.busy, replayed, fresh))

        # the outbox: one record.created per record, each turned into a sync job that finished it
        ids = set(acked.values())
        events = created_events(env, tenant.id)
        assert set(events) == ids, "%s: record.created for %d ids, %d records" % (where, len(events), len(ids))
        assert set(events.values()) == {1}, "%s: %r" % (where, [i for i, n in events.items() if n != 1][:5])
        assert wait_for(lambda: not_synced(env, tenant.id) == 0, SYNC_TIMEOUT, 0.1), \
            "%s: %d records not synced after %.0fs" % (where, not_synced(env, tenant.id), SYNC_TIMEOUT)
        # a job killed between marking its record synced and recording its
        # own end is finished again once its lease runs out
        def done_targets():
            return {j["target"] for j in env.job_rows(tenant.id, kind="record.sync") if j["state"] == "done"}
        wait_for(lambda: ids <= done_targets(), SYNC_TIMEOUT, 0.1)
        jobs = env.job_rows(tenant.id, kind="record.sync")
        targets = {j["target"] for j in jobs if j["state"] == "done"}
        assert ids <= targets, "%s: %d records without a done record.sync job" % (where, len(ids - targets))
        assert not [j for j in jobs if j["state"] == "dead"], where
        # what the API shows agrees with the tables
        for key in rnd.sample(sorted(acked), 5):
            got = env.get_record(tenant.admin, acked[key]).body
            assert got["status"] == "synced" and got["title"] == "crash " + key
    print("crash rounds on %s (seed %d): (kill after s, acked, unacknowledged, of them 503, replayed, fresh) %r"
          % (engine, seed, stats))
    # at least one round caught writes in flight (otherwise the replay path went untested)
    assert lost_total, "no write was in flight at any kill (seed %d)" % seed
