"""The sync plugin end to end (GET /v1/sync/changes, POST /v1/sync/push,
GET /v1/sync/queue, POST /v1/sync/retry/:job and the record.sync jobs),
with the records and policies plugins it builds on, on SQLite and
PostgreSQL:

  - the change feed: full sync, resuming, commit order, compaction,
    tombstones, paging (also while writers commit), bad parameters, and
    convergence of a client that replays from any cursor it was ever given;
  - two offline clients editing the same records, reconnecting one after
    the other: both converge on the server's state, one conflict, resolved;
  - a push whose answer was lost, sent again: replayed, nothing twice;
  - batch push answers item by item;
  - sync policies routing the feed by network class (queue=, defer=, drop),
    held-back changes released by a network switch or a policy change, and
    the outbound jobs' queues;
  - the outbound queue: record.sync jobs mark records synced (same causal
    token), listing, retry of dead/queued jobs, and a record waiting for its
    other outbound jobs;
  - tenants never see or change each other's data through the sync routes;
  - conf/relaysync.conf runs the whole product.

Tests share one daemon per engine and make a tenant each; the
conf/relaysync.conf test starts its own."""
import base64
import copy
import json
import os
import threading
import time

import pytest

from conftest import (Daemon, TOP_BUILDDIR, TOP_SRCDIR, finish_all, free_port, req, run_relayctl)
from relaysync_support import CAUSAL_RE, JOB_ID_RE, RECORD_ID_RE, crockford_id, shared_env, sql_quote, wait_for
from relaysync_support import _envs  # noqa: F401 (fixtures)
from users_support import parse_time

JOB_FIELDS = {"id", "kind", "queue", "target", "state", "attempts", "max_attempts", "next_attempt_at",
              "last_error", "created_at", "updated_at"}


@pytest.fixture
def env(engine, request, _envs, tmp_path_factory):
    return shared_env(engine, request, _envs, tmp_path_factory, tag="sync")


# ================================================================ helpers

def new_fields(i=0, **kw):
    f = {"title": "Pressure check %d" % i, "type": "inspection", "site": "alpha", "payload": {"n": i}}
    f.update(kw)
    return f


def big_payload(n=6000):
    return {"photo": "x" * n}


def jobs_settled(env, t):
    """True when the sync plugin has seen every record change of tenant T
    (its event subscriptions are past them, so their jobs exist) and none
    of T's jobs is queued or running."""
    last = max([e["seq"] for e in env.event_rows(tenant=t.id) if e["type"] in ("record.created", "record.updated")],
               default=0)
    seen = {r["name"]: r["seq"] for r in env.rows("relay_event_cursors")}
    if seen.get("sync/sync.created", 0) < last or seen.get("sync/sync.updated", 0) < last:
        return False
    return all(j["state"] in ("done", "dead") for j in env.job_rows(tenant=t.id))


def settle(env, t, timeout=10.0):
    """Waits until tenant T's outbound jobs have all finished (so records no
    longer change under a test that compares states)."""
    assert wait_for(lambda: jobs_settled(env, t), timeout), env.job_rows(tenant=t.id)


def wait_synced(env, t, rid, timeout=5.0):
    rec = wait_for(lambda: env.get_record(t.admin, rid).body["status"] == "synced" and
                   env.get_record(t.admin, rid).body, timeout)
    assert rec, env.get_record(t.admin, rid).body
    return rec


def server_live(env, key):
    """{id: record} of the tenant's live records, as GET /v1/records shows them."""
    return {r["id"]: r for r in env.list_records(key)}


def apply_changes(state, changes):
    """A client applying feed CHANGES, in order, to STATE ({id: record})."""
    for c in changes:
        assert c["op"] in ("upsert", "delete"), c
        assert c["id"] == c["record"]["id"], c
        if c["op"] == "delete":
            assert c["record"]["deleted"] is True and c["record"]["deleted_at"], c
            state.pop(c["id"], None)
        else:
            assert c["record"]["deleted"] is False and c["record"]["deleted_at"] is None, c
            state[c["id"]] = c["record"]
    return state


def pull_pages(env, key, since=None, network=None, limit=None):
    """Every page of the feed from SINCE until has_more is false: [body]."""
    pages, cursor = [], since
    for _ in range(1000):
        body = env.changes(key, since=cursor, network=network, limit=limit).body
        assert set(body) == {"changes", "next_cursor", "has_more", "withheld"}, body
        pages.append(body)
        cursor = body["next_cursor"]
        if not body["has_more"]:
            return pages
    raise AssertionError("the feed never ended")


def ids_of(changes):
    return [c["id"] for c in changes]


def assert_error(reply, status, code):
    assert reply.status == status, reply
    assert isinstance(reply.body, dict) and set(reply.body) == {"error"}, reply.body
    assert reply.body["error"]["code"] == code, reply.body
    assert reply.body["error"]["message"], reply.body


def b64url(text):
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def now_ms():
    return int(time.time() * 1000)


def insert_job(env, tenant, kind, target=None, state="queued", attempts=0, max_attempts=8, run_at=None,
               payload="{}", queue="default"):
    """A job row written straight into relay_jobs (as another plugin, or an
    older version of this one, would have enqueued it): its id."""
    jid = crockford_id("job_")
    t = now_ms()
    env.storage.execute(
        "INSERT INTO relay_jobs (id, tenant, kind, queue, target, payload, state, attempts, max_attempts,"
        " run_at, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %d, %d, %d, %d, %d)"
        % (sql_quote(jid), sql_quote(tenant), sql_quote(kind), sql_quote(queue),
           sql_quote(target) if target else "NULL", sql_quote(payload), sql_quote(state), attempts, max_attempts,
           run_at if run_at is not None else t, t, t))
    return jid


def job_row(env, jid):
    rows = env.rows("relay_jobs", "id = %s" % sql_quote(jid))
    assert len(rows) == 1, rows
    return rows[0]


_readers = {}


def reader(env):
    """One tenant per daemon for the tests that only send bad requests."""
    if id(env) not in _readers:
        _readers[id(env)] = env.new_tenant("bad requests")
    return _readers[id(env)]


def count_events(env, t, type):
    return len(env.event_rows(tenant=t.id, type=type))


# ------------------------------------------------------ an offline client

class Client:
    """An offline-first client as RelaySync expects one: a local copy of the
    records ({id: record}), the feed cursor, and an outbox of changes made
    offline, each with its own idempotency key.  An update names the causal
    token of the version it was made on; a later offline edit of a record
    whose earlier change is still in the outbox takes its token from that
    change's answer when it arrives, so the outbox goes out in rounds."""

    def __init__(self, env, key, name, network=None):
        self.env, self.key, self.name, self.network = env, key, name, network
        self.records = {}
        self.cursor = None
        self.outbox = []
        self.conflicts = []
        self.seen_cursors = []  # (cursor, copy of the records when it was given)
        self._n = 0

    def _idem(self):
        self._n += 1
        return "%s-%d-%s" % (self.name, self._n, os.urandom(4).hex())

    # -- online

    def pull(self, limit=None):
        for body in pull_pages(self.env, self.key, since=self.cursor, network=self.network, limit=limit):
            apply_changes(self.records, body["changes"])
            self.cursor = body["next_cursor"]
            self.seen_cursors.append((self.cursor, copy.deepcopy(self.records)))

    def push(self):
        """Sends the outbox; returns [(item, answer)]."""
        out = []
        while self.outbox:
            batch = []
            for item in self.outbox:
                if item["op"] != "create" and "causal" not in item:
                    break  # builds on an answer not received yet
                batch.append(item)
            assert batch, self.outbox
            results = self.env.push(self.key, batch).body["results"]
            assert [a["index"] for a in results] == list(range(len(batch))), results
            del self.outbox[:len(batch)]
            for item, a in zip(batch, results):
                out.append((item, a))
                if a["outcome"] in ("applied", "replayed"):
                    rec = a["record"]
                    if rec["deleted"]:
                        self.records.pop(rec["id"], None)
                    else:
                        self.records[rec["id"]] = rec
                    for later in self.outbox:  # the next change of this record builds on this version
                        if later.get("id", later.get("record", {}).get("id")) == rec["id"] and "causal" not in later:
                            later["causal"] = rec["causal"]
                            break
                elif a["outcome"] == "conflict":
                    self.conflicts.append((item, a))
                    self.records[item["id"]] = a["error"]["current"]
                else:
                    raise AssertionError("push answered %r for %r" % (a, item))
        return out

    # -- offline

    def create(self, fields):
        rid = crockford_id()
        self.records[rid] = dict(fields, id=rid)
        self.outbox.append({"op": "create", "idempotency_key": self._idem(), "record": dict(fields, id=rid)})
        return rid

    def update(self, rid, patch, causal=None):
        item = {"op": "update", "idempotency_key": self._idem(), "id": rid, "patch": patch}
        waiting = any(i.get("id", i.get("record", {}).get("id")) == rid for i in self.outbox)
        if causal:
            item["causal"] = causal
        elif not waiting:
            item["causal"] = self.records[rid]["causal"]
        local = self.records[rid]
        for k, v in patch.items():
            if k == "payload":
                local.setdefault("payload", {}).update(v)
            else:
                local[k] = v
        self.outbox.append(item)
        return item

    def resolve(self, item, answer):
        """Re-applies the edit that lost a conflict on the current version."""
        current = answer["error"]["current"]
        self.records[current["id"]] = current
        return self.update(current["id"], item["patch"], causal=current["causal"])


# ============================================================ the change feed

def test_full_sync_from_no_cursor(env):
    t = env.new_tenant()
    made = [env.create_record(t.admin, new_fields(i)).body for i in range(4)]
    settle(env, t)
    body = env.changes(t.viewer).body
    assert set(body) == {"changes", "next_cursor", "has_more", "withheld"}
    assert body["has_more"] is False and body["withheld"] == 0
    assert isinstance(body["next_cursor"], str) and body["next_cursor"]
    assert sorted(ids_of(body["changes"])) == sorted(r["id"] for r in made)
    for c in body["changes"]:
        assert set(c) == {"seq", "op", "id", "record"}
        assert c["op"] == "upsert"
        assert c["record"] == env.get_record(t.viewer, c["id"]).body  # the record as GET shows it
        assert c["record"]["status"] == "synced"  # the jobs finished before the pull
    # seq is the record's position in records_records
    stored = {r["id"]: r["change_seq"] for r in env.record_rows(tenant=t.id)}
    assert {c["id"]: c["seq"] for c in body["changes"]} == stored
    # a tenant with nothing gets an empty feed that still has a cursor
    empty = env.changes(env.new_tenant().admin).body
    assert empty["changes"] == [] and empty["has_more"] is False and empty["next_cursor"]


def test_resume_from_next_cursor_returns_only_later_changes(env):
    t = env.new_tenant()
    first = [env.create_record(t.admin, new_fields(i, status="synced")).body["id"] for i in range(3)]
    body = env.changes(t.admin).body
    assert sorted(ids_of(body["changes"])) == sorted(first)
    cursor = body["next_cursor"]
    # nothing new: the cursor gives nothing, and a cursor again
    again = env.changes(t.admin, since=cursor).body
    assert again["changes"] == [] and again["has_more"] is False and again["next_cursor"]
    later = [env.create_record(t.admin, new_fields(10 + i, status="synced")).body["id"] for i in range(2)]
    edited = env.patch_record(t.admin, first[0], {"title": "edited", "status": "synced"},
                              causal=env.get_record(t.admin, first[0]).body["causal"]).body
    body = env.changes(t.admin, since=cursor).body
    assert ids_of(body["changes"]) == later + [first[0]]
    assert body["changes"][-1]["record"] == edited
    # the cursor of a later pull moves on; the earlier one still works
    after = env.changes(t.admin, since=body["next_cursor"]).body
    assert after["changes"] == []
    assert ids_of(env.changes(t.admin, since=cursor).body["changes"]) == later + [first[0]]


def test_feed_is_in_commit_order_with_increasing_seq(env):
    t = env.new_tenant()
    ids = [env.create_record(t.admin, new_fields(i)).body["id"] for i in range(6)]
    # edits in another order than the creates
    for rid in (ids[3], ids[0], ids[5]):
        cur = env.get_record(t.admin, rid).body
        env.patch_record(t.operator, rid, {"payload": {"edited": True}}, causal=cur["causal"])
    settle(env, t)
    changes, _ = env.changes_all(t.admin, limit=2)
    seqs = [c["seq"] for c in changes]
    assert all(a < b for a, b in zip(seqs, seqs[1:])), seqs
    assert sorted(ids_of(changes)) == sorted(ids)
    # the order is the order of the records' last changes, as the events tell it
    last_event = {}
    for ev in env.event_rows(tenant=t.id):
        if ev["type"].startswith("record.") and ev["type"] != "record.conflict":
            last_event[ev["payload"]["id"]] = ev["seq"]
    assert ids_of(changes) == sorted(last_event, key=last_event.get)
    assert [c["seq"] for c in changes] == sorted(last_event.values())


def test_compaction_record_edited_three_times_appears_once(env):
    t = env.new_tenant()
    rec = env.create_record(t.admin, new_fields(1, status="synced")).body
    other = env.create_record(t.admin, new_fields(2, status="synced")).body
    start = env.changes(t.admin).body["next_cursor"]
    for i in range(3):
        rec = env.patch_record(t.admin, rec["id"], {"title": "v%d" % i, "payload": {"v": i}, "status": "synced"},
                               causal=rec["causal"]).body
    for since in (None, start):
        changes, _ = env.changes_all(t.admin, since=since)
        mine = [c for c in changes if c["id"] == rec["id"]]
        assert len(mine) == 1, changes
        assert mine[0]["record"] == rec and mine[0]["record"]["title"] == "v2"
        assert mine[0]["record"]["payload"] == {"n": 1, "v": 2}
    assert ids_of(env.changes_all(t.admin)[0]) == [other["id"], rec["id"]]
    # three record.updated events, one row
    assert count_events(env, t, "record.updated") == 3
    assert len(env.record_rows(tenant=t.id, rid=rec["id"])) == 1


def test_tombstone_is_delivered_as_delete(env):
    t = env.new_tenant()
    keep = env.create_record(t.admin, new_fields(1)).body
    gone = env.create_record(t.admin, new_fields(2)).body
    settle(env, t)
    client = {}
    body = env.changes(t.admin).body
    apply_changes(client, body["changes"])
    assert set(client) == {keep["id"], gone["id"]}
    tomb = env.delete_record(t.admin, gone["id"]).body
    assert tomb["deleted"] is True
    body2 = env.changes(t.admin, since=body["next_cursor"]).body
    assert len(body2["changes"]) == 1
    c = body2["changes"][0]
    assert c["op"] == "delete" and c["id"] == gone["id"]
    assert c["record"] == tomb and c["record"]["deleted_at"]
    apply_changes(client, body2["changes"])
    assert set(client) == {keep["id"]}
    # a fresh client also gets the tombstone (a delete for a record it never had: harmless)
    full = env.changes_all(t.viewer)[0]
    assert {c["id"]: c["op"] for c in full} == {keep["id"]: "upsert", gone["id"]: "delete"}
    assert env.get_record(t.admin, gone["id"], expect=410).body["error"]["code"] == "record.deleted"
    assert gone["id"] not in server_live(env, t.admin)
    # a deletion needs no sync: no record.sync job for the tombstone
    tomb_jobs = [j for j in env.job_rows(tenant=t.id, target=gone["id"])
                 if j["payload"].get("causal") == tomb["causal"]]
    assert tomb_jobs == []


def test_has_more_and_limit_paging(env):
    t = env.new_tenant()
    ids = [env.create_record(t.admin, new_fields(i, status="synced")).body["id"] for i in range(5)]
    pages = pull_pages(env, t.admin, limit=2)
    assert [len(p["changes"]) for p in pages] == [2, 2, 1]
    assert [p["has_more"] for p in pages] == [True, True, False]
    assert [c["id"] for p in pages for c in p["changes"]] == ids
    # a page that ends exactly at the last change says has_more; the next one is empty
    pages = pull_pages(env, t.admin, limit=5)
    assert [len(p["changes"]) for p in pages] == [5, 0]
    assert [p["has_more"] for p in pages] == [True, False]
    # the default page is [sync] page_size (100), the largest limit 500
    more = env.push(t.admin, [{"op": "create", "record": new_fields(100 + i, status="synced")}
                              for i in range(96)]).body["results"]
    assert {a["outcome"] for a in more} == {"applied"}
    first = env.changes(t.admin).body
    assert len(first["changes"]) == 100 and first["has_more"] is True
    rest = env.changes(t.admin, since=first["next_cursor"]).body
    assert len(rest["changes"]) == 1 and rest["has_more"] is False
    assert len(env.changes(t.admin, limit=500).body["changes"]) == 101


@pytest.mark.parametrize("query,code", [
    ("since=not-a-cursor!", "invalid_cursor"),
    ("since=" + b64url("[1,2]"), "invalid_cursor"),
    ("since=" + b64url('{"p":1}'), "invalid_cursor"),
    ("since=" + b64url('{"p":5,"s":2,"n":"","d":0}'), "invalid_cursor"),
    ("since=" + b64url('{"p":-1,"s":2,"n":"","d":0}'), "invalid_cursor"),
    ("since=" + b64url('{"p":1,"s":2,"n":"Wi Fi","d":0}'), "invalid_cursor"),
    ("since=" + b64url('{"p":"1","s":2,"n":"","d":0}'), "invalid_cursor"),
    ("since=" + b64url('{"p":1,"s":2,"n":"","d":0,"v":5}'), "invalid_cursor"),
    ("network=WiFi", "invalid_network"),
    ("network=" + "w" * 33, "invalid_network"),
    ("network=wi%20fi", "invalid_network"),
    ("limit=0", "invalid_limit"),
    ("limit=-1", "invalid_limit"),
    ("limit=501", "invalid_limit"),
    ("limit=ten", "invalid_limit"),
])
def test_feed_bad_parameters_are_400(env, query, code):
    t = reader(env)
    r = env.api("GET", "/v1/sync/changes?" + query, key=t.viewer)
    assert_error(r, 400, code)


def test_feed_auth(env):
    t = env.new_tenant()
    assert env.api("GET", "/v1/sync/changes").status == 401
    assert env.api("GET", "/v1/sync/changes", key="rs_live_nope.nope").status == 401
    for role in ("viewer", "operator", "admin"):
        assert env.changes(t.key(role)).status == 200
    # a network class is a plain word: wifi, cellular, satellite_2, ...
    for net in ("wifi", "cellular", "satellite_2", "x" * 32):
        assert env.changes(t.viewer, network=net).status == 200


def test_replay_from_any_cursor_converges(env):
    """A client that pulls from any cursor it was ever given (with the state
    it had then) and applies what comes in order ends with exactly the
    server's state, while records are created, edited, deleted and synced
    by the outbound jobs meanwhile."""
    t = env.new_tenant()
    c = Client(env, t.viewer, "replayer")
    c.pull(limit=2)
    live = []
    for round_ in range(4):
        for i in range(3):
            live.append(env.create_record(t.admin, new_fields(10 * round_ + i)).body["id"])
        c.pull(limit=2)
        # edit two, delete one, create-and-delete one the client never sees alive
        for rid in live[-2:]:
            cur = env.get_record(t.admin, rid).body
            env.patch_record(t.operator, rid, {"payload": {"round": round_}}, causal=cur["causal"])
        env.delete_record(t.admin, live.pop(0))
        flash = env.create_record(t.admin, new_fields(99)).body["id"]
        env.delete_record(t.admin, flash)
        c.pull(limit=2)
    settle(env, t)
    c.pull(limit=3)
    truth = server_live(env, t.admin)
    assert c.records == truth
    assert len(c.seen_cursors) >= 10
    seen_ids = set(r["id"] for r in env.record_rows(tenant=t.id))
    for cursor, snapshot in c.seen_cursors:
        for limit in (None, 1):
            state = copy.deepcopy(snapshot)
            changes, _ = env.changes_all(t.viewer, since=cursor, limit=limit)
            apply_changes(state, changes)
            assert state == truth, (cursor, limit)
    # every id the server has is either live in the client with GET's body, or gone (410)
    for rid in seen_ids:
        r = env.get_record(t.viewer, rid, expect=(200, 410))
        if r.status == 200:
            assert c.records[rid] == r.body
        else:
            assert rid not in c.records


def test_feed_paged_during_concurrent_writes_misses_nothing(env):
    """Writers on several connections commit while a client pages through
    the feed: seq only grows along the cursor chain, and no change that
    committed late hides behind a cursor already handed out."""
    t = env.new_tenant()
    made, errors = [], []

    def writer(w):
        try:
            for i in range(12):
                r = env.create_record(t.operator, new_fields(100 * w + i, status="synced"), expect=None)
                if r.status != 201:
                    errors.append(r)
                    return
                made.append(r.body["id"])
                if i % 3 == 0:
                    env.patch_record(t.operator, r.body["id"], {"payload": {"w": w}, "status": "synced"},
                                     causal=r.body["causal"])
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for th in threads:
        th.start()
    state, cursor, seqs = {}, None, []
    while any(th.is_alive() for th in threads):
        body = env.changes(t.viewer, since=cursor, limit=3).body
        seqs += [c["seq"] for c in body["changes"]]
        apply_changes(state, body["changes"])
        cursor = body["next_cursor"]
    for th in threads:
        th.join()
    assert not errors, errors
    for body in pull_pages(env, t.viewer, since=cursor, limit=3):
        seqs += [c["seq"] for c in body["changes"]]
        apply_changes(state, body["changes"])
    assert all(a < b for a, b in zip(seqs, seqs[1:])), seqs
    assert len(made) == 48 and set(state) == set(made)
    assert state == server_live(env, t.admin)


# ============================================================ offline clients

def test_two_offline_clients_converge_with_one_conflict(env):
    t = env.new_tenant()
    shared = env.create_record(t.admin, new_fields(1, title="Valve 7")).body
    only_a = env.create_record(t.admin, new_fields(2, title="Pump 3")).body
    only_b = env.create_record(t.admin, new_fields(3, title="Gauge 9")).body
    settle(env, t)
    a = Client(env, t.operator, "A", network="wifi")
    b = Client(env, t.new_key("operator"), "B", network="cellular")
    a.pull()
    b.pull()
    assert a.records == b.records == server_live(env, t.admin)
    conflicts_before = count_events(env, t, "record.conflict")

    # offline: both edit the shared record, each edits another one, A
    # creates a record with its own id and edits it again
    a.update(shared["id"], {"title": "Valve 7 (A)", "payload": {"psi": 40}})
    b.update(shared["id"], {"payload": {"note": "leaking"}})
    a.update(only_a["id"], {"status": "failed"})
    b.update(only_b["id"], {"site": "beta"})
    new_id = a.create(new_fields(4, title="New from A"))
    a.update(new_id, {"title": "New from A, edited offline", "payload": {"edited": 1}})
    assert RECORD_ID_RE.match(new_id)

    # A reconnects first: everything applies
    answers_a = a.push()
    assert [x["outcome"] for _, x in answers_a] == ["applied"] * 4
    assert len(env.record_rows(tenant=t.id, rid=new_id)) == 1
    assert env.get_record(t.admin, new_id).body["title"] == "New from A, edited offline"
    a.pull()

    # then B: its edit of the shared record conflicts, its other edit applies
    answers_b = b.push()
    assert [x["outcome"] for _, x in answers_b] == ["conflict", "applied"]
    lost_item, lost = answers_b[0]
    assert lost["http_status"] == 409 and lost["error"]["code"] == "record.conflict"
    current = lost["error"]["current"]
    now = env.get_record(t.admin, shared["id"]).body  # (its job may have synced it since: same causal)
    assert {k: v for k, v in current.items() if k != "status"} == {k: v for k, v in now.items() if k != "status"}
    assert current["title"] == "Valve 7 (A)" and current["payload"] == {"n": 1, "psi": 40}
    assert len(b.conflicts) == 1 and not a.conflicts
    assert count_events(env, t, "record.conflict") == conflicts_before + 1
    ev = env.event_rows(tenant=t.id, type="record.conflict")[-1]["payload"]
    assert ev["id"] == shared["id"] and ev["expected"] == shared["causal"] and ev["current"] == current["causal"]

    # B resolves: its edit again, on the current version
    resolved = b.resolve(lost_item, lost)
    assert resolved["causal"] == current["causal"]
    assert [x["outcome"] for _, x in b.push()] == ["applied"]
    b.pull()
    a.pull()
    settle(env, t)
    a.pull()
    b.pull()
    truth = server_live(env, t.admin)
    assert a.records == b.records == truth
    assert truth[shared["id"]]["title"] == "Valve 7 (A)"
    assert truth[shared["id"]]["payload"] == {"n": 1, "psi": 40, "note": "leaking"}
    assert truth[only_a["id"]]["status"] in ("failed", "synced")
    assert truth[only_b["id"]]["site"] == "beta"
    assert truth[new_id]["payload"] == {"n": 4, "edited": 1}
    # still exactly one conflict, and every offline change was stored once
    assert count_events(env, t, "record.conflict") == conflicts_before + 1
    assert count_events(env, t, "record.created") == 4
    assert count_events(env, t, "record.updated") == 5  # A: 3, B: 1 + the resolution
    # each applied change kept its idempotency key's answer
    stored = {r["key"] for r in env.idempotency_rows(tenant=t.id)}
    applied_keys = {i["idempotency_key"] for i, x in answers_a + answers_b if x["outcome"] == "applied"}
    assert applied_keys <= stored and lost_item["idempotency_key"] not in stored


def test_offline_create_then_edit_is_two_versions_of_one_record(env):
    t = env.new_tenant()
    c = Client(env, t.operator, "solo")
    rid = c.create(new_fields(1))
    c.update(rid, {"title": "second"})
    c.update(rid, {"title": "third"})
    answers = c.push()
    assert [x["outcome"] for _, x in answers] == ["applied"] * 3
    first, second, third = [x["record"] for _, x in answers]
    assert first["id"] == second["id"] == third["id"] == rid
    assert all(CAUSAL_RE.match(r["causal"]) for r in (first, second, third))
    assert first["causal"] < second["causal"] < third["causal"]
    assert env.get_record(t.admin, rid).body["title"] == "third"
    # the same outbox sent again (a client that never saw the answers): all replayed
    again = env.push(t.operator, [i for i, _ in answers]).body["results"]
    assert [x["outcome"] for x in again] == ["replayed"] * 3
    assert [x["record"] for x in again] == [first, second, third]


# ================================================================ lost response

def test_lost_push_response_is_replayed_not_applied_twice(env):
    t = env.new_tenant()
    upd = env.create_record(t.admin, new_fields(1)).body
    dele = env.create_record(t.admin, new_fields(2)).body
    settle(env, t)
    upd = env.get_record(t.admin, upd["id"]).body
    client_id = crockford_id()
    batch = [{"op": "create", "idempotency_key": "lost-1", "record": new_fields(3, id=client_id)},
             {"op": "create", "idempotency_key": "lost-2", "record": new_fields(4)},
             {"op": "update", "idempotency_key": "lost-3", "id": upd["id"], "causal": upd["causal"],
              "patch": {"title": "changed while the answer got lost"}},
             {"op": "delete", "idempotency_key": "lost-4", "id": dele["id"]}]
    body = json.dumps({"changes": batch}).encode()
    s = env.d.sock()
    s.sendall(req("POST", "/v1/sync/push", [("X-API-Key", t.operator), ("Content-Type", "application/json")],
                  body))
    s.close()  # gone before the answer: the client does not know what happened

    # the server finished the batch anyway
    assert wait_for(lambda: len(env.record_rows(tenant=t.id)) == 4 and
                    env.get_record(t.admin, dele["id"], expect=(200, 410)).status == 410), env.record_rows(tenant=t.id)

    def push_again():
        for _ in range(50):  # a key still in flight answers 409: the client waits and retries
            results = env.push(t.operator, batch).body["results"]
            if not any(r.get("error", {}).get("code") == "idempotency_key_in_flight" for r in results):
                return results
            time.sleep(0.05)
        raise AssertionError(results)

    again = push_again()
    assert [r["outcome"] for r in again] == ["replayed"] * 4, again
    assert [r["http_status"] for r in again] == [201, 201, 200, 200]
    created1, created2, updated, tomb = [r["record"] for r in again]
    assert created1["id"] == client_id and RECORD_ID_RE.match(created2["id"])
    # the first answers, as they were: the creates still say "queued" though
    # the outbound jobs have synced the records since
    settle(env, t)
    assert created1["status"] == created2["status"] == "queued"
    assert env.get_record(t.admin, client_id).body["status"] == "synced"
    for rec in (created1, created2, updated):
        assert env.get_record(t.admin, rec["id"]).body["causal"] == rec["causal"]
    assert updated["title"] == "changed while the answer got lost" and updated["causal"] != upd["causal"]
    assert tomb["deleted"] is True and tomb["id"] == dele["id"]
    # the same bodies every time
    assert env.push(t.operator, batch).body["results"] == again
    # nothing was applied twice
    assert len(env.record_rows(tenant=t.id)) == 4
    assert count_events(env, t, "record.created") == 4
    assert count_events(env, t, "record.updated") == 1
    assert count_events(env, t, "record.deleted") == 1
    assert len(env.idempotency_rows(tenant=t.id)) == 4
    sync_jobs = env.job_rows(tenant=t.id, kind="record.sync")
    assert len(sync_jobs) == 5  # two first creates, two pushed creates, one update
    # single routes share the keys: the first create sent again by POST /v1/records is a replay too
    r = env.create_record(t.operator, new_fields(3, id=client_id), idem="lost-1")
    assert r.replayed and r.body == created1


# ================================================================= batch push

def test_push_answers_item_by_item(env):
    t = env.new_tenant()
    base = env.create_record(t.admin, new_fields(1)).body
    env.create_record(t.admin, new_fields(2), idem="used-before")
    stale = base["causal"]
    base = env.patch_record(t.admin, base["id"], {"title": "moved on"}, causal=base["causal"],
                            idem="patched-before").body
    events_before = len(env.event_rows(tenant=t.id))
    batch = [
        {"op": "create", "idempotency_key": "b-0", "record": new_fields(10)},                      # applied
        {"op": "create", "idempotency_key": "used-before", "record": new_fields(2)},               # replayed
        {"op": "update", "idempotency_key": "b-2", "id": base["id"], "causal": stale,
         "patch": {"title": "too late"}},                                                            # conflict
        {"op": "create", "idempotency_key": "b-3", "record": {"type": "inspection"}},              # invalid: title
        {"op": "rename", "id": base["id"]},                                                          # invalid: op
        {"op": "update", "causal": stale, "patch": {"title": "x"}},                                 # invalid: no id
        "not an object",                                                                             # invalid
        {"op": "update", "id": base["id"], "patch": {"title": "no causal"}},                        # invalid: 428
        {"op": "update", "id": crockford_id(), "causal": stale, "patch": {"title": "x"}},          # invalid: 404
        {"op": "create", "record": new_fields(11), "extra": 1},                                     # invalid: member
        {"op": "update", "idempotency_key": "b-10", "id": base["id"], "causal": base["causal"],
         "patch": {"payload": {"after": "invalid items"}}},                                          # applied
        {"op": "delete", "id": base["id"]},                                                          # applied
        {"op": "create", "idempotency_key": "patched-before", "record": new_fields(12)},            # invalid: key reused
    ]
    r = env.push(t.operator, batch)
    res = r.body["results"]
    assert set(r.body) == {"results"}
    assert [a["index"] for a in res] == list(range(len(batch)))
    assert [a["outcome"] for a in res] == ["applied", "replayed", "conflict", "invalid", "invalid", "invalid",
                                           "invalid", "invalid", "invalid", "invalid", "applied", "applied",
                                           "invalid"]
    assert [a["http_status"] for a in res] == [201, 201, 409, 422, 422, 422, 422, 428, 404, 422, 200, 200, 422]
    for a in res:
        assert set(a) == {"index", "outcome", "http_status", "record" if a["outcome"] in ("applied", "replayed")
                          else "error"}, a
    assert RECORD_ID_RE.match(res[0]["record"]["id"]) and res[0]["record"]["title"] == "Pressure check 10"
    assert res[1]["record"]["title"] == "Pressure check 2"
    assert res[2]["error"]["code"] == "record.conflict" and res[2]["error"]["current"]["causal"] == base["causal"]
    assert res[3]["error"]["code"] == "validation_failed" and res[3]["error"]["details"]
    assert [res[i]["error"]["code"] for i in (4, 5, 6, 9)] == ["invalid_change"] * 4
    assert res[7]["error"]["code"] == "causal_required"
    assert res[8]["error"]["code"] == "record.not_found"
    assert res[12]["error"]["code"] == "idempotency_key_reused"
    assert res[10]["record"]["payload"] == {"n": 1, "after": "invalid items"}
    assert res[11]["record"]["deleted"] is True and res[11]["record"]["causal"] > res[10]["record"]["causal"]
    for a in res:
        if "error" in a:
            assert isinstance(a["error"]["message"], str) and a["error"]["message"]
    # stored: the applied ones only
    assert env.get_record(t.admin, res[0]["record"]["id"]).body["title"] == "Pressure check 10"
    assert len(env.record_rows(tenant=t.id)) == 3
    types = [e["type"] for e in env.event_rows(tenant=t.id)][events_before:]
    assert sorted(t_ for t_ in types if t_ != "record.synced") == \
        ["record.conflict", "record.created", "record.deleted", "record.updated"]


def test_push_same_key_twice_in_one_batch(env):
    t = env.new_tenant()
    item = {"op": "create", "idempotency_key": "twice", "record": new_fields(1)}
    other = {"op": "create", "idempotency_key": "twice", "record": new_fields(2)}
    results = env.push(t.operator, [item, dict(item), other]).body["results"]
    assert [r["outcome"] for r in results] == ["applied", "replayed", "invalid"]
    assert [r["index"] for r in results] == [0, 1, 2]
    assert results[1]["record"] == results[0]["record"] and results[1]["http_status"] == 201
    assert results[2]["error"]["code"] == "idempotency_key_reused" and results[2]["http_status"] == 422
    assert len(env.record_rows(tenant=t.id)) == 1
    # and across batches, as before
    again = env.push(t.operator, [item]).body["results"][0]
    assert again["outcome"] == "replayed" and again["record"] == results[0]["record"]


def test_push_limits_and_refusals(env):
    t = env.new_tenant()
    one = {"op": "create", "record": new_fields(1)}
    r = env.push(t.admin, [one] * 101, expect=413)
    assert_error(r, 413, "batch_too_large")
    assert env.push(t.admin, [one] * 100).status == 200  # max_batch is 100
    assert len(env.record_rows(tenant=t.id)) == 100
    for body in ({"changes": []}, {"changes": {}}, {"changes": "x"}, {}, {"change": [one]}):
        r = env.api("POST", "/v1/sync/push", body, key=t.admin)
        assert_error(r, 422, "validation_failed")
    r = env.api("POST", "/v1/sync/push", key=t.admin, raw=b'{"changes": [')
    assert_error(r, 400, "invalid_json")
    r = env.push(t.viewer, [one], expect=403)
    assert r.body["error"]["code"]
    assert env.api("POST", "/v1/sync/push", {"changes": [one]}).status == 401
    assert env.push(t.operator, [one]).status == 200
    assert len(env.record_rows(tenant=t.id)) == 101  # the viewer's and the refused ones stored nothing


def test_push_update_replays_a_patch_sent_with_the_same_key(env):
    """A PATCH whose answer was lost, queued offline and pushed later with
    the same Idempotency-Key and the same change, is a replay (one
    idempotency namespace for the routes and the push)."""
    t = env.new_tenant()
    rec = env.create_record(t.admin, new_fields(1)).body
    patched = env.patch_record(t.admin, rec["id"], {"title": "once"}, causal=rec["causal"], idem="same-key").body
    res = env.push(t.admin, [{"op": "update", "idempotency_key": "same-key", "id": rec["id"],
                              "causal": rec["causal"], "patch": {"title": "once"}}]).body["results"][0]
    assert res["outcome"] == "replayed", res
    assert res["record"] == patched
    # and the other way round: pushed first, PATCHed again
    res = env.push(t.admin, [{"op": "update", "idempotency_key": "other-key", "id": rec["id"],
                              "causal": patched["causal"], "patch": {"title": "twice"}}]).body["results"][0]
    assert res["outcome"] == "applied"
    r = env.patch_record(t.admin, rec["id"], {"title": "twice"}, causal=patched["causal"], idem="other-key")
    assert r.replayed and r.body == res["record"]
    assert count_events(env, t, "record.updated") == 2


# ============================================================== policy routing

def test_queue_policy_routes_by_network_class(env):
    t = env.new_tenant()
    env.post_policy(t.admin, "defer_media", "size>5120", "queue=wifi", expect=201)
    small1 = env.create_record(t.admin, new_fields(1)).body["id"]
    big = env.create_record(t.admin, new_fields(2, payload=big_payload())).body["id"]
    small2 = env.create_record(t.admin, new_fields(3)).body["id"]
    assert env.get_record(t.admin, big).body["size"] > 5120
    settle(env, t)
    # outbound jobs: the big record's in queue wifi, the small ones' in default
    jobs = {j["target"]: j for j in env.queue_all(t.viewer)}
    assert jobs[big]["queue"] == "wifi" and jobs[big]["kind"] == "record.sync"
    assert jobs[small1]["queue"] == jobs[small2]["queue"] == "default"
    assert all(j["state"] == "done" for j in jobs.values())
    assert env.job_rows(tenant=t.id, target=big)[0]["payload"]["policy"] == "defer_media"

    # cellular: the small ones, not the big one, which is counted as withheld
    pages = pull_pages(env, t.viewer, network="cellular")
    got = [c for p in pages for c in p["changes"]]
    # feed order is the order the records last changed: their record.sync jobs
    # run concurrently, so either small record may have been marked synced first
    assert sorted(ids_of(got)) == sorted([small1, small2])
    assert sum(p["withheld"] for p in pages) == 1
    cursor = pages[-1]["next_cursor"]
    # more small changes on cellular later: delivered, the big one still held
    small3 = env.create_record(t.admin, new_fields(4, status="synced")).body["id"]
    pages = pull_pages(env, t.viewer, since=cursor, network="cellular")
    assert ids_of([c for p in pages for c in p["changes"]]) == [small3]
    cursor = pages[-1]["next_cursor"]
    # same cursor chain, now on wifi: the held-back record comes (others may come again)
    pages = pull_pages(env, t.viewer, since=cursor, network="wifi")
    got = [c for p in pages for c in p["changes"]]
    assert big in ids_of(got)
    assert [c for c in got if c["id"] == big][0]["record"] == env.get_record(t.viewer, big).body
    assert sum(p["withheld"] for p in pages) == 0
    assert set(ids_of(got)) <= {small1, small2, small3, big}
    # and the chain goes on: nothing more on wifi
    assert env.changes(t.viewer, since=pages[-1]["next_cursor"], network="wifi").body["changes"] == []
    # a client that says no network gets everything, as does a fresh wifi client
    for net in (None, "wifi"):
        state = apply_changes({}, env.changes_all(t.viewer, network=net)[0])
        assert state == server_live(env, t.admin)
    # an edit that makes the big record small reaches cellular clients
    cur = env.get_record(t.admin, big).body
    env.patch_record(t.admin, big, {"payload": None, "status": "synced"}, causal=cur["causal"])
    got = env.changes_all(t.viewer, since=cursor, network="cellular")[0]
    assert big in ids_of(got)


def test_change_held_by_a_deleted_policy_reaches_clients_on_the_same_network(env):
    t = env.new_tenant()
    pol = env.post_policy(t.admin, "defer_media", "size>5120", "queue=wifi", expect=201).body
    small = env.create_record(t.admin, new_fields(1, status="synced")).body["id"]
    big = env.create_record(t.admin, new_fields(2, status="synced", payload=big_payload())).body["id"]
    c = Client(env, t.viewer, "phone", network="cellular")
    c.pull()
    assert set(c.records) == {small}
    # the policy goes away: nothing holds the big record back any more
    assert env.api("DELETE", "/v1/policies/" + pol["id"], key=t.admin).status == 200
    c.pull()
    assert c.records == server_live(env, t.admin)
    assert big in c.records


def test_held_back_change_survives_paging(env):
    """A cellular client paging one change at a time: the held-back record
    leaves an empty page (has_more, withheld 1); switching to wifi later
    from the last cursor delivers it."""
    t = env.new_tenant()
    env.post_policy(t.admin, "defer_media", "size>5120", "queue=wifi", expect=201)
    ids = [env.create_record(t.admin, new_fields(i, status="synced", **({"payload": big_payload()} if i == 1 else {})))
           .body["id"] for i in range(4)]
    pages = pull_pages(env, t.viewer, network="cellular", limit=1)
    assert [ids_of(p["changes"]) for p in pages] == [[ids[0]], [], [ids[2]], [ids[3]], []]
    assert [p["withheld"] for p in pages] == [0, 1, 0, 0, 0]
    assert [p["has_more"] for p in pages] == [True, True, True, True, False]
    pages = pull_pages(env, t.viewer, since=pages[-1]["next_cursor"], network="wifi", limit=1)
    got = [c for p in pages for c in p["changes"]]
    assert ids[1] in ids_of(got)
    # back on cellular from the wifi cursor: nothing is missing or held any more
    after = env.changes_all(t.viewer, since=pages[-1]["next_cursor"], network="cellular")[0]
    assert after == []


def test_drop_policy_hides_from_everyone_and_makes_no_job(env):
    t = env.new_tenant()
    env.post_policy(t.admin, "hide_secret", "type == 'secret'", "drop", expect=201)
    secret = env.create_record(t.admin, new_fields(1, type="secret")).body["id"]
    plain = env.create_record(t.admin, new_fields(2)).body["id"]
    wait_synced(env, t, plain)
    settle(env, t)
    assert env.job_rows(tenant=t.id, target=secret) == []
    assert [j["target"] for j in env.queue_all(t.admin)] == [plain]
    assert env.get_record(t.admin, secret).body["status"] == "queued"  # no job: stays as it is
    for net in (None, "wifi", "cellular"):
        pages = pull_pages(env, t.viewer, network=net)
        assert ids_of([c for p in pages for c in p["changes"]]) == [plain]
        assert sum(p["withheld"] for p in pages) == 0  # hidden, not held back
    # the cursor stays before a dropped change: once the policy goes, the change comes
    cursor = env.changes(t.viewer, network="cellular").body["next_cursor"]
    assert ids_of(env.changes(t.viewer, since=cursor, network="cellular").body["changes"]) == []
    policy = [p for p in env.policies(t.admin).body["policies"] if p["name"] == "hide_secret"][0]
    assert env.api("DELETE", "/v1/policies/" + policy["id"], key=t.admin).status == 200
    # (with what came after it again: delivery is at least once)
    assert ids_of(env.changes(t.viewer, since=cursor, network="cellular").body["changes"]) == [secret, plain]
    # another tenant's policies do not apply
    u = env.new_tenant()
    other = env.create_record(u.admin, new_fields(1, type="secret")).body["id"]
    assert ids_of(env.changes_all(u.viewer)[0]) == [other]
    assert wait_for(lambda: env.job_rows(tenant=u.id, target=other))


def test_defer_policy_holds_a_change_until_due(env):
    t = env.new_tenant()
    env.post_policy(t.admin, "later", "type == 'later'", "defer=2s", expect=201)
    cursor = env.changes(t.viewer).body["next_cursor"]
    t0 = time.monotonic()
    # created synced: no job will touch it, only the feed's deferral decides when it comes
    later = env.create_record(t.admin, new_fields(1, type="later", status="synced")).body
    now = env.create_record(t.admin, new_fields(2, status="synced")).body["id"]
    # created queued: its outbound job waits as long
    queued = env.create_record(t.admin, new_fields(3, type="later")).body
    body = env.changes(t.viewer, since=cursor).body
    assert ids_of(body["changes"]) == [now] and body["withheld"] == 2
    for net in (None, "wifi", "cellular"):  # held from everyone until due, fresh clients too
        pages = pull_pages(env, t.viewer, network=net)
        assert ids_of([c for p in pages for c in p["changes"]]) == [now]
        assert sum(p["withheld"] for p in pages) == 2
    jobs = wait_for(lambda: env.job_rows(tenant=t.id, target=queued["id"]))
    assert jobs[0]["queue"] == "default" and 1900 <= jobs[0]["run_at"] - jobs[0]["created_at"] <= 2100
    assert env.job_rows(tenant=t.id, target=later["id"]) == []
    listed = [j for j in env.queue(t.viewer).body["jobs"] if j["target"] == queued["id"]][0]
    assert listed["state"] == "queued"
    assert abs(parse_time(listed["next_attempt_at"]) - (parse_time(queued["created_at"]) + 2)) < 0.5
    assert env.get_record(t.admin, queued["id"]).body["status"] == "queued"
    # poll with the cursor until the changes are due
    delivered = {}
    cursor = body["next_cursor"]
    while time.monotonic() - t0 < 6 and not {later["id"], queued["id"]} <= set(delivered):
        time.sleep(0.1)
        b = env.changes(t.viewer, since=cursor).body
        cursor = b["next_cursor"]
        delivered.update((c["id"], c["record"]) for c in b["changes"])
    assert set(delivered) >= {later["id"], queued["id"]}, "the deferred changes never came"
    assert set(delivered) <= {later["id"], queued["id"], now}  # (delivered ones may come again)
    assert time.monotonic() - t0 >= 1.9
    assert delivered[later["id"]] == later
    # after its time the job synced the record, same causal token
    rec = wait_synced(env, t, queued["id"])
    assert rec["causal"] == queued["causal"]
    assert env.job_rows(tenant=t.id, target=queued["id"])[0]["state"] == "done"
    settle(env, t)
    assert apply_changes({}, env.changes_all(t.viewer)[0]) == server_live(env, t.admin)


# ============================================================ outbound queue

def test_created_record_gets_a_sync_job_and_becomes_synced(env):
    t = env.new_tenant()
    rec = env.create_record(t.admin, new_fields(1)).body
    assert rec["status"] == "queued"
    jobs = wait_for(lambda: env.job_rows(tenant=t.id, target=rec["id"]))
    assert len(jobs) == 1 and jobs[0]["kind"] == "record.sync" and jobs[0]["queue"] == "default"
    assert jobs[0]["payload"]["causal"] == rec["causal"] and jobs[0]["payload"]["id"] == rec["id"]
    synced = wait_synced(env, t, rec["id"])
    assert synced["causal"] == rec["causal"]  # the server's status change is not a client edit
    assert {k: v for k, v in synced.items() if k != "status"} == {k: v for k, v in rec.items() if k != "status"}
    assert wait_for(lambda: env.job_rows(tenant=t.id, target=rec["id"])[0]["state"] == "done")
    evs = env.event_rows(tenant=t.id, type="record.synced")
    assert len(evs) == 1 and evs[0]["payload"]["causal"] == rec["causal"] and evs[0]["payload"]["status"] == "synced"
    # the client holding the token can still edit: the edit sends it back to queued
    edited = env.patch_record(t.operator, rec["id"], {"title": "edited"}, causal=rec["causal"]).body
    assert edited["status"] == "queued" and edited["causal"] > rec["causal"]
    jobs = wait_for(lambda: len(env.job_rows(tenant=t.id, target=rec["id"])) == 2 and
                    env.job_rows(tenant=t.id, target=rec["id"]))
    assert len(jobs) == 2 and jobs[1]["payload"]["causal"] == edited["causal"]
    again = wait_synced(env, t, rec["id"])
    assert again["causal"] == edited["causal"] and again["title"] == "edited"
    settle(env, t)
    assert [j["state"] for j in env.job_rows(tenant=t.id, target=rec["id"])] == ["done", "done"]
    assert count_events(env, t, "record.synced") == 2
    # a record created synced, or marked synced by a client, needs no job
    pre = env.create_record(t.admin, new_fields(2, status="synced")).body
    settle(env, t)
    assert env.job_rows(tenant=t.id, target=pre["id"]) == []


def test_drafts_and_failed_records_get_no_job_and_keep_their_status(env):
    t = env.new_tenant()
    draft = env.create_record(t.admin, new_fields(1, status="draft")).body
    failed = env.create_record(t.admin, new_fields(2, status="failed")).body
    queued = env.create_record(t.admin, new_fields(3)).body
    wait_synced(env, t, queued["id"])  # the outbox got this far: the others were seen too
    settle(env, t)
    for rec, status in ((draft, "draft"), (failed, "failed")):
        assert env.job_rows(tenant=t.id, target=rec["id"]) == []
        assert env.get_record(t.admin, rec["id"]).body["status"] == status
    # a draft made ready goes out
    ready = env.patch_record(t.operator, draft["id"], {"status": "queued"}, causal=draft["causal"]).body
    assert wait_synced(env, t, draft["id"])["causal"] == ready["causal"]


def test_job_of_a_superseded_version_does_nothing(env):
    t = env.new_tenant()
    # both versions match a drop policy: neither gets a job of its own
    env.post_policy(t.admin, "no_sync", "title in ['v1', 'v2']", "drop", expect=201)
    rec = env.create_record(t.admin, new_fields(1, title="v1")).body
    edited = env.patch_record(t.admin, rec["id"], {"title": "v2"}, causal=rec["causal"]).body
    # the first version's job, run late: it must not mark the newer version synced
    stale = insert_job(env, t.id, "record.sync", target=rec["id"],
                       payload=json.dumps({"id": rec["id"], "causal": rec["causal"]}))
    assert wait_for(lambda: job_row(env, stale)["state"] == "done")
    settle(env, t)
    assert [j["id"] for j in env.job_rows(tenant=t.id)] == [stale]
    final = env.get_record(t.admin, rec["id"]).body
    assert final == edited and final["status"] == "queued"
    assert count_events(env, t, "record.synced") == 0
    # the current version's job does mark it
    current = insert_job(env, t.id, "record.sync", target=rec["id"],
                         payload=json.dumps({"id": rec["id"], "causal": edited["causal"]}))
    assert wait_for(lambda: job_row(env, current)["state"] == "done")
    assert env.get_record(t.admin, rec["id"]).body["status"] == "synced"
    assert count_events(env, t, "record.synced") == 1


def test_queue_listing(env):
    t = env.new_tenant()
    ids = [env.create_record(t.admin, new_fields(i)).body["id"] for i in range(5)]
    settle(env, t)
    body = env.queue(t.viewer).body
    assert set(body) == {"jobs", "next_cursor"} and body["next_cursor"] is None
    jobs = body["jobs"]
    assert len(jobs) == 5
    for j in jobs:
        assert set(j) == JOB_FIELDS, j
        assert JOB_ID_RE.match(j["id"]) and j["kind"] == "record.sync" and j["queue"] == "default"
        assert j["state"] == "done" and j["attempts"] == 1 and j["max_attempts"] >= 1
        assert j["next_attempt_at"] is None and j["last_error"] is None
        assert parse_time(j["created_at"]) <= parse_time(j["updated_at"])
    assert [j["id"] for j in jobs] == sorted((j["id"] for j in jobs), reverse=True)  # newest first
    assert sorted(j["target"] for j in jobs) == sorted(ids)
    # cursor paging: every job once
    seen, cursor, pages = [], None, 0
    while True:
        page = env.queue(t.viewer, limit=2, cursor=cursor).body
        pages += 1
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [j["id"] for j in jobs] and pages == 3
    # the state filter
    queued = insert_job(env, t.id, "outbound.test", target=ids[0], run_at=now_ms() + 3600000)
    dead = insert_job(env, t.id, "outbound.test", state="dead", attempts=3, max_attempts=3)
    assert [j["id"] for j in env.queue(t.viewer, state="queued").body["jobs"]] == [queued]
    assert [j["id"] for j in env.queue(t.viewer, state="dead").body["jobs"]] == [dead]
    assert len(env.queue_all(t.viewer, state="done")) == 5
    assert env.queue(t.viewer, state="running").body["jobs"] == []
    q = [j for j in env.queue(t.viewer).body["jobs"] if j["id"] == queued][0]
    assert q["state"] == "queued" and parse_time(q["next_attempt_at"]) > time.time() + 3000
    env.storage.execute("DELETE FROM relay_jobs WHERE id = %s" % sql_quote(queued))


@pytest.mark.parametrize("query,code", [
    ("state=waiting", "invalid_state"),
    ("state=DONE", "invalid_state"),
    ("limit=0", "invalid_limit"),
    ("limit=501", "invalid_limit"),
    ("limit=x", "invalid_limit"),
    ("cursor=***", "invalid_cursor"),
    ("cursor=" + b64url('{"id":"rec_1"}'), "invalid_cursor"),
    ("cursor=" + b64url('{"x":1}'), "invalid_cursor"),
])
def test_queue_bad_parameters_are_400(env, query, code):
    t = reader(env)
    assert_error(env.api("GET", "/v1/sync/queue?" + query, key=t.viewer), 400, code)


def test_retry_a_dead_job(env):
    t = env.new_tenant()
    # a record.sync job that cannot work (no causal token) and has one attempt: it dies
    jid = insert_job(env, t.id, "record.sync", target=crockford_id(), max_attempts=1, payload='{"id":"x"}')
    assert wait_for(lambda: job_row(env, jid)["state"] == "dead"), job_row(env, jid)
    listed = env.queue(t.viewer, state="dead").body["jobs"]
    assert [j["id"] for j in listed] == [jid]
    assert listed[0]["attempts"] == 1 and listed[0]["max_attempts"] == 1
    assert listed[0]["last_error"] == "malformed record.sync job" and listed[0]["next_attempt_at"] is None
    r = env.retry(t.operator, jid)
    assert set(r.body) == {"job"} and set(r.body["job"]) == JOB_FIELDS
    assert r.body["job"]["id"] == jid and r.body["job"]["max_attempts"] == 2
    if r.body["job"]["state"] == "queued":  # (else its next run already began)
        assert r.body["job"]["attempts"] == 1
        assert abs(parse_time(r.body["job"]["next_attempt_at"]) - time.time()) < 2
    # it runs again at once (and dies again: its payload is still bad)
    assert wait_for(lambda: job_row(env, jid)["attempts"] == 2 and job_row(env, jid)["state"] == "dead"), \
        job_row(env, jid)


def test_retry_makes_a_job_due_now_with_one_more_attempt(env):
    t = env.new_tenant()
    hour_ago = now_ms() - 3600000
    # a kind nothing here runs, so the retried job stays where the retry put it
    dead = insert_job(env, t.id, "webhook.delivery", state="dead", attempts=5, max_attempts=5, run_at=hour_ago)
    before = now_ms()
    r = env.retry(t.admin, dead)
    row = job_row(env, dead)
    assert row["state"] == "queued" and row["attempts"] == 5 and row["max_attempts"] == 6
    assert before <= row["run_at"] <= now_ms()
    assert r.body["job"]["max_attempts"] == 6
    # retrying it again while queued makes it due now, no extra attempt
    env.retry(t.admin, dead)
    assert job_row(env, dead)["max_attempts"] == 6
    # a queued job due in an hour is due now after a retry
    future = insert_job(env, t.id, "webhook.delivery", run_at=now_ms() + 3600000)
    env.retry(t.operator, future)
    row = job_row(env, future)
    assert row["run_at"] <= now_ms() and row["max_attempts"] == 8 and row["attempts"] == 0


def test_retry_refusals(env):
    t = env.new_tenant()
    rec = env.create_record(t.admin, new_fields(1)).body
    settle(env, t)
    done = env.job_rows(tenant=t.id, target=rec["id"])[0]
    assert done["state"] == "done"
    r = env.retry(t.admin, done["id"], expect=409)
    assert_error(r, 409, "job.not_retryable")
    assert r.body["error"]["job"]["id"] == done["id"] and r.body["error"]["job"]["state"] == "done"
    assert job_row(env, done["id"])["state"] == "done"
    running = insert_job(env, t.id, "webhook.delivery", state="running", attempts=1)
    assert_error(env.retry(t.admin, running, expect=409), 409, "job.not_retryable")
    for jid in (crockford_id("job_"), "job_2003", "job_", "nope", rec["id"]):
        assert_error(env.retry(t.admin, jid, expect=404), 404, "job.not_found")
    # another tenant's job is unknown to this one
    u = env.new_tenant()
    dead = insert_job(env, t.id, "webhook.delivery", state="dead", attempts=1, max_attempts=1)
    assert_error(env.retry(u.admin, dead, expect=404), 404, "job.not_found")
    assert job_row(env, dead)["state"] == "dead"
    # viewers cannot retry; nobody without a key
    r = env.retry(t.viewer, dead, expect=403)
    assert r.body["error"]["code"]
    assert env.api("POST", "/v1/sync/retry/" + dead).status == 401
    assert job_row(env, dead)["state"] == "dead" and job_row(env, dead)["max_attempts"] == 1


def test_record_becomes_synced_only_when_its_other_outbound_jobs_are_done(env):
    t = env.new_tenant()
    rid = crockford_id()
    other = insert_job(env, t.id, "webhook.delivery", target=rid, run_at=now_ms() + 3600000)
    # another tenant's pending job for the same id does not hold this record back
    u = env.new_tenant()
    insert_job(env, u.id, "webhook.delivery", target=rid, run_at=now_ms() + 3600000)
    rec = env.create_record(t.admin, new_fields(1, id=rid)).body
    assert rec["id"] == rid
    sync_job = wait_for(lambda: env.job_rows(tenant=t.id, kind="record.sync"))[0]
    assert wait_for(lambda: (job_row(env, sync_job["id"])["last_error"] or "").startswith("waiting for 1 outbound"))
    row = wait_for(lambda: job_row(env, sync_job["id"])["state"] == "queued" and job_row(env, sync_job["id"]))
    assert row["attempts"] == 0 and row["run_at"] > now_ms()  # waiting spends no attempt
    assert env.get_record(t.admin, rid).body["status"] == "queued"
    assert count_events(env, t, "record.synced") == 0
    # the other job finishes: the record becomes synced
    env.storage.execute("UPDATE relay_jobs SET state = 'done' WHERE id = %s" % sql_quote(other))
    synced = wait_synced(env, t, rid, timeout=5)
    assert synced["causal"] == rec["causal"]
    assert wait_for(lambda: job_row(env, sync_job["id"])["state"] == "done")
    assert count_events(env, t, "record.synced") == 1
    # ids and the jobs that hold records back are per tenant: the other
    # tenant's record of the same id waits for that tenant's own job
    urec = env.create_record(u.admin, new_fields(2, id=rid)).body
    assert urec["id"] == rid
    assert wait_for(lambda: any((j["last_error"] or "").startswith("waiting for 1 outbound")
                                for j in env.job_rows(tenant=u.id, kind="record.sync")))
    assert env.get_record(u.admin, rid).body["status"] == "queued"
    env.storage.execute("UPDATE relay_jobs SET state = 'done' WHERE tenant = %s AND kind = 'webhook.delivery'"
                        % sql_quote(u.id))
    wait_synced(env, u, rid)


# =============================================================== tenancy

def test_tenants_never_see_or_change_each_others_sync_data(env):
    a = env.new_tenant("A")
    b = env.new_tenant("B")
    rec = env.create_record(a.admin, new_fields(1), idem="shared-key").body
    env.post_policy(a.admin, "a_only", "size > 0", "queue=wifi", expect=201)
    settle(env, a)
    a_job = env.job_rows(tenant=a.id)[0]
    # nothing of A's in B's feed, queue or records, on any network
    for net in (None, "wifi", "cellular"):
        pages = pull_pages(env, b.admin, network=net)
        assert [c for p in pages for c in p["changes"]] == [] and sum(p["withheld"] for p in pages) == 0
    assert env.queue(b.admin).body == {"jobs": [], "next_cursor": None}
    assert env.queue(b.admin, state="done").body["jobs"] == []
    assert_error(env.get_record(b.admin, rec["id"], expect=404), 404, "record.not_found")
    assert_error(env.retry(b.admin, a_job["id"], expect=404), 404, "job.not_found")
    # B cannot change A's record through the push
    current = env.get_record(a.admin, rec["id"]).body
    res = env.push(b.admin, [
        {"op": "update", "id": rec["id"], "causal": current["causal"], "patch": {"title": "B was here"}},
        {"op": "delete", "id": rec["id"], "causal": current["causal"]},
        {"op": "delete", "id": rec["id"]},
    ]).body["results"]
    assert [x["outcome"] for x in res] == ["invalid"] * 3
    assert [x["http_status"] for x in res] == [404] * 3
    assert {x["error"]["code"] for x in res} == {"record.not_found"}
    assert "current" not in json.dumps(res)  # nothing of A's record in the answers
    assert env.get_record(a.admin, rec["id"]).body == current
    # B creating a record with A's id and A's idempotency key makes B's own record
    res = env.push(b.admin, [{"op": "create", "idempotency_key": "shared-key",
                              "record": new_fields(9, id=rec["id"], title="B's")}]).body["results"][0]
    assert res["outcome"] == "applied" and res["record"]["title"] == "B's"
    assert env.get_record(a.admin, rec["id"]).body == current
    assert env.get_record(b.admin, rec["id"]).body["title"] == "B's"
    # ... which A never sees, and whose job A cannot retry or list
    assert ids_of(env.changes_all(a.admin)[0]) == [rec["id"]]
    assert env.changes_all(a.admin)[0][0]["record"]["title"] == "Pressure check 1"
    settle(env, b)
    b_job = env.job_rows(tenant=b.id)[0]
    assert_error(env.retry(a.admin, b_job["id"], expect=404), 404, "job.not_found")
    assert b_job["id"] not in [j["id"] for j in env.queue_all(a.admin)]
    # A's policy does not route B's feed: B's record reaches B's cellular client
    assert ids_of(env.changes_all(b.viewer, network="cellular")[0]) == [rec["id"]]
    assert ids_of(env.changes_all(a.viewer, network="cellular")[0]) == []


# ====================================================== conf/relaysync.conf

def test_relaysync_conf_runs_the_whole_product(storage, tmp_path):
    """conf/relaysync.conf as shipped, with only paths and the address
    overridden: every RelaySync route it documents answers."""
    conf = os.path.join(TOP_SRCDIR, "conf", "relaysync.conf")
    port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    overrides = ["plugins.dir=" + os.path.join(TOP_BUILDDIR, "plugins"),
                 "storage.dir=" + os.path.join(TOP_BUILDDIR, "storage"),
                 "server.data_dir=" + str(data),
                 "server.listen=127.0.0.1:%d" % port,
                 "server.workers=2"]
    if storage.engine == "pgsql":
        overrides += ["storage.driver=pgsql", "storage.dsn=" + storage.dsn]
    d = Daemon(tmp_path / "daemon", overrides=overrides, port=port)
    d.conf_path = conf  # the shipped file, not one written for the test
    try:
        d.start()
        rc, out, err = run_relayctl(conf, "tenant", "create", "Acme", overrides=overrides)
        assert rc == 0, err
        key = json.loads(out)["api_key"]
        assert key.startswith("rs_live_")  # the product's key prefix
        if storage.engine == "sqlite":
            assert os.path.exists(os.path.join(str(data), "relay.db")) or os.listdir(str(data))

        def call(method, path, body=None, auth=True):
            h = {"X-API-Key": key} if auth else {}
            status, _, raw = d.request(method, path, body=body, headers=h)
            return status, json.loads(raw) if raw else None

        s, tok = call("POST", "/v1/auth/token", {"api_key": key}, auth=False)
        assert s == 200 and tok["token"]
        status, _, _ = d.request("GET", "/v1/records?status=queued&limit=50",
                                 headers={"Authorization": "Bearer " + tok["token"]})
        assert status == 200
        s, rec = call("POST", "/v1/records", {"title": "Pressure check", "type": "inspection", "site": "alpha"})
        assert s == 201
        s, patched = call("PATCH", "/v1/records/" + rec["id"], {"status": "synced", "causal": rec["causal"]})
        assert s == 200 and patched["status"] == "synced"
        assert call("GET", "/v1/records/" + rec["id"])[0] == 200
        s, job_rec = call("POST", "/v1/records", {"title": "Second", "type": "inspection"})
        assert s == 201
        # GET /v1/sync/queue: the record's job, enqueued from the outbox soon after
        q = wait_for(lambda: [j for j in call("GET", "/v1/sync/queue")[1]["jobs"] if j["target"] == job_rec["id"]])
        assert q and q[0]["kind"] == "record.sync"
        q = {"jobs": q}
        s, r = call("POST", "/v1/sync/retry/" + q["jobs"][0]["id"])
        assert s in (202, 409)  # due now, or already done by the time it asks
        assert call("POST", "/v1/sync/retry/job_2003")[0] == 404  # the document's example id: not one of ours
        s, p = call("POST", "/v1/policies", {"name": "defer_media", "when": "size>5120", "then": "queue=wifi"})
        assert s == 201
        s, ps = call("GET", "/v1/policies")
        assert s == 200 and [x["name"] for x in ps["policies"]] == ["defer_media"]
        assert call("GET", "/v1/policies/" + p["id"])[0] == 200
        assert call("POST", "/v1/policies/%s/dryrun" % p["id"], {"record": {"size": 6000}})[0] == 200
        assert call("GET", "/v1/users?role=operator")[0] == 200
        s, inv = call("POST", "/v1/users/invite", {"email": "new@org.io", "role": "operator"})
        assert s == 201
        s, feed = call("GET", "/v1/sync/changes?network=cellular")
        assert s == 200 and rec["id"] in [c["id"] for c in feed["changes"]]
        s, pushed = call("POST", "/v1/sync/push", {"changes": [{"op": "create", "idempotency_key": "2f3a",
                                                                "record": {"title": "x", "type": "y"}}]})
        assert s == 200 and pushed["results"][0]["outcome"] == "applied"
        assert call("DELETE", "/v1/records/" + rec["id"])[0] == 200
        assert call("DELETE", "/v1/policies/" + p["id"])[0] == 200
        # every route wants a key
        for method, path in (("GET", "/v1/records"), ("GET", "/v1/sync/changes"), ("GET", "/v1/sync/queue"),
                             ("POST", "/v1/sync/push"), ("GET", "/v1/policies"), ("GET", "/v1/users")):
            assert call(method, path, auth=False)[0] == 401, path
    finally:
        finish_all([d])
