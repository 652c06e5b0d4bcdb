"""The records plugin end to end (RelaySync's /v1/records), on SQLite and
PostgreSQL: the API document's curl examples adapted to the test server,
creation and its field rules, Idempotency-Key (replay after a lost
response, reuse with another body, a key in flight, keys per tenant,
expiry), causal tokens and the conflict flow, RFC 7396 merge patches,
tombstones, listing with filters and keyset pagination under concurrent
inserts, size limits, tenant isolation, roles, malformed bodies, and that
a refused request leaves the database as it was.

Every test checks the answer and what the database holds (records_records,
relay_events, relay_idempotency, relay_jobs read directly).  Tests share
one daemon per engine and make their own tenants; those that need other
settings start their own.  Tenants made with quiet() carry a policy that
drops every record from the outbound queue, so statuses stay as written
(otherwise the record.sync job turns them "synced" within ~100 ms)."""
import json
import socket
import threading
import time
import urllib.parse

import pytest

from conftest import req
from relaysync_support import (CAUSAL_RE, RECORD_ID_RE, crockford_id, hold_writers, linguistic_storage,
                               scalar, shared_env, sql_quote, table_snapshot,
                               wait_for)
from relaysync_support import relaysync_daemon_factory
from relaysync_support import _envs, rs_daemon  # noqa: F401 (fixtures)
from users_support import parse_time

RECORD_KEYS = {"id", "title", "type", "site", "status", "payload", "causal", "size", "created_at", "updated_at",
               "deleted", "deleted_at", "updated_by"}
TABLES = ("records_records", "relay_events", "relay_idempotency", "relay_jobs")


@pytest.fixture
def env(engine, request, _envs, tmp_path_factory):
    """The module's daemon on the engine under test (started on first use)."""
    return shared_env(engine, request, _envs, tmp_path_factory, tag="records")


@pytest.fixture(scope="module")
def _refusing():
    return {}


@pytest.fixture
def refusing(env, engine, _refusing):
    """A tenant of the module's daemon that only ever gets refused writes,
    so it must have no record and no stored key (made once per engine)."""
    if engine not in _refusing:
        _refusing[engine] = quiet(env, "Refused")
    t = _refusing[engine]
    assert stored_count(env, t.id) == 0
    return t


def stored_count(env, tenant_id):
    """Records, stored keys and record events of the tenant, in one query."""
    q = sql_quote(tenant_id)
    return int(scalar(
        env.storage, "SELECT (SELECT COUNT(*) FROM records_records WHERE tenant = %s)"
        " + (SELECT COUNT(*) FROM relay_idempotency WHERE tenant = %s)"
        " + (SELECT COUNT(*) FROM relay_events WHERE tenant = %s AND type LIKE 'record.%%')" % (q, q, q)))


# ---------------------------------------------------------------- helpers

def quiet(env, name="Quiet Field Ops"):
    """A tenant whose records never get a record.sync job (a drop-all
    policy), so their status stays what the test wrote."""
    t = env.new_tenant(name)
    env.post_policy(t.admin, "hold_everything", "true", "drop", expect=201)
    return t


def compact_size(payload):
    return len(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())


def snapshot(env, tenant_id):
    """Everything the database holds for a tenant in the plugins' tables."""
    return table_snapshot(env.storage, TABLES, "tenant = " + sql_quote(tenant_id))


def settle(env, tenant_id):
    """Waits until no record.sync job of the tenant is queued or running."""
    assert wait_for(lambda: all(j["state"] in ("done", "dead") for j in env.job_rows(tenant_id)), 10), \
        env.job_rows(tenant_id)


def events(env, tenant_id, type=None):
    return env.event_rows(tenant_id, type)


def assert_error(reply, status, code):
    assert reply.status == status, reply
    assert isinstance(reply.body, dict) and set(reply.body) == {"error"}, reply.body
    assert reply.body["error"]["code"] == code, reply.body
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"]
    return reply.body["error"]


def assert_record_shape(rec):
    assert set(rec) == RECORD_KEYS, rec
    assert RECORD_ID_RE.match(rec["id"]) and CAUSAL_RE.match(rec["causal"]), rec
    parse_time(rec["created_at"])
    parse_time(rec["updated_at"])


def stored(env, tenant_id, rid):
    rows = env.record_rows(tenant_id, rid)
    assert len(rows) == 1, rows
    return rows[0]


def as_shown(row):
    """What GET shows for a records_records row (times compared as ms)."""
    return {"id": row["id"], "title": row["title"], "type": row["type"], "site": row["site"],
            "status": row["status"], "payload": json.loads(row["payload"]), "causal": row["causal"],
            "size": row["size"], "updated_by": row["updated_by"], "deleted": row["deleted_ms"] is not None}


def shown(rec):
    return {k: rec[k] for k in ("id", "title", "type", "site", "status", "payload", "causal", "size", "updated_by",
                                "deleted")}


def ms(text):
    return round(parse_time(text) * 1000)


# ====================================================== the document's examples

def test_doc_create_with_idempotency_key(env):
    """curl -X POST /v1/records -H "Idempotency-Key: 2f3a…" -d '{"title":"Pressure
    check","type":"inspection","site":"alpha"}' (with a bearer token)."""
    t = quiet(env)
    token = env.token(t.admin)
    body = {"title": "Pressure check", "type": "inspection", "site": "alpha"}
    key = "2f3a9c1e-5b7d-4e2a-9f0c-8d6b1a3e5f70"
    r = env.api("POST", "/v1/records", body, key=token, how="bearer", headers={"Idempotency-Key": key})
    assert r.status == 201, r
    assert "idempotent-replayed" not in r.headers
    rec = r.body
    assert_record_shape(rec)
    assert {k: rec[k] for k in ("title", "type", "site", "status", "payload", "size", "deleted", "deleted_at")} == \
        {"title": "Pressure check", "type": "inspection", "site": "alpha", "status": "queued", "payload": {},
         "size": 2, "deleted": False, "deleted_at": None}
    assert rec["created_at"] == rec["updated_at"]
    assert abs(parse_time(rec["created_at"]) - time.time()) < 60
    assert rec["updated_by"] == t.admin_key_id
    # stored: the row, the event, the answer for the key
    row = stored(env, t.id, rec["id"])
    assert as_shown(row) == shown(rec)
    assert row["created_ms"] == row["updated_ms"] == ms(rec["created_at"]) and row["deleted_ms"] is None
    assert row["created_by"] == t.admin_key_id
    evs = events(env, t.id, "record.created")
    assert [e["payload"] for e in evs] == [rec]
    assert row["change_seq"] == evs[0]["seq"]
    idem = env.idempotency_rows(t.id)
    assert len(idem) == 1 and idem[0]["scope"] == "records" and idem[0]["key"] == key
    assert idem[0]["status"] == 201 and json.loads(idem[0]["body"]) == rec
    assert 86_400_000 - 60_000 < idem[0]["expires_ms"] - idem[0]["created_ms"] <= 86_400_000
    # the same request again: the first answer, marked as a replay, and nothing new
    again = env.api("POST", "/v1/records", body, key=token, how="bearer", headers={"Idempotency-Key": key})
    assert again.status == 201 and again.replayed and again.body == rec
    assert len(env.record_rows(t.id)) == 1
    assert len(events(env, t.id, "record.created")) == 1
    # the same key through X-API-Key (another credential of the tenant) is the same key
    third = env.create_record(t.operator, body, idem=key)
    assert third.replayed and third.body == rec


def test_doc_list_queued_with_limit_50(env):
    """curl /v1/records?status=queued&limit=50 -H "Authorization: Bearer …"."""
    t = quiet(env)
    queued = [env.create_record(t.admin, {"title": "q%d" % i, "type": "inspection"}).body for i in range(3)]
    env.create_record(t.admin, {"title": "d", "type": "inspection", "status": "draft"})
    env.create_record(t.admin, {"title": "s", "type": "inspection", "status": "synced"})
    token = env.token(t.viewer)
    r = env.api("GET", "/v1/records?status=queued&limit=50", key=token, how="bearer")
    assert r.status == 200, r
    assert set(r.body) == {"records", "next_cursor"}
    assert r.body["next_cursor"] is None
    assert r.body["records"] == sorted(queued, key=lambda x: x["id"], reverse=True)


def test_doc_patch_status_synced_with_causal(env):
    """curl -X PATCH /v1/records/rec_… -d '{"status":"synced","causal":"01HJ…"}'."""
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "Pressure check", "type": "inspection", "site": "alpha"}).body
    r = env.patch_record(t.operator, rec["id"], {"status": "synced", "causal": rec["causal"]})
    new = r.body
    assert_record_shape(new)
    assert new["status"] == "synced" and new["causal"] > rec["causal"]
    assert {k: new[k] for k in ("id", "title", "type", "site", "payload", "created_at")} == \
        {k: rec[k] for k in ("id", "title", "type", "site", "payload", "created_at")}
    assert new["updated_at"] >= rec["updated_at"] and new["updated_by"] != rec["updated_by"]
    assert env.get_record(t.viewer, rec["id"]).body == new
    assert as_shown(stored(env, t.id, rec["id"])) == shown(new)
    types = [e["type"] for e in events(env, t.id) if e["type"].startswith("record.")]
    assert types == ["record.created", "record.updated", "record.synced"]
    assert [e["payload"] for e in events(env, t.id, "record.synced")] == [new]


def test_doc_delete(env):
    """curl -X DELETE /v1/records/rec_…: a tombstone, replicated to clients."""
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "Pressure check", "type": "inspection", "site": "alpha"}).body
    gone = env.delete_record(t.admin, rec["id"]).body
    assert_record_shape(gone)
    assert gone["deleted"] is True and gone["deleted_at"] == gone["updated_at"]
    assert gone["causal"] > rec["causal"] and gone["status"] == rec["status"]
    assert {k: gone[k] for k in ("title", "type", "site", "payload", "size")} == \
        {k: rec[k] for k in ("title", "type", "site", "payload", "size")}
    row = stored(env, t.id, rec["id"])
    assert row["deleted_ms"] == ms(gone["deleted_at"])
    assert [e["payload"] for e in events(env, t.id, "record.deleted")] == [gone]
    assert env.list_records(t.viewer) == []
    err = assert_error(env.get_record(t.viewer, rec["id"], expect=None), 410, "record.deleted")
    assert err["current"] == gone


# ================================================================= creating

def test_create_all_fields_and_client_made_id(env):
    t = quiet(env)
    rid = crockford_id()
    payload = {"psi": 118.5, "ok": True, "tags": ["valve", "north"], "note": "Ünïcödé ✓", "nested": {"a": None}}
    rec = env.create_record(t.operator, {"id": rid, "title": "T", "type": "inspection", "site": None,
                                         "status": "draft", "payload": payload}).body
    assert rec["id"] == rid and rec["site"] is None and rec["status"] == "draft"
    assert rec["payload"] == payload and rec["size"] == compact_size(payload)
    assert json.loads(stored(env, t.id, rid)["payload"]) == payload
    # the same id again: 409 with the record that has it, and nothing changed
    before = snapshot(env, t.id)
    err = assert_error(env.create_record(t.admin, {"id": rid, "title": "other", "type": "x"}, expect=None),
                       409, "record.exists")
    assert err["current"] == rec
    assert snapshot(env, t.id) == before
    # every status is accepted on create; "synced" at once emits record.synced
    for status in ("queued", "synced", "failed"):
        r = env.create_record(t.admin, {"title": status, "type": "x", "status": status}).body
        assert r["status"] == status
    assert [e["payload"]["title"] for e in events(env, t.id, "record.synced")] == ["synced"]


@pytest.mark.parametrize("bad_id", ["rec_123", "rec_" + "0" * 25, "rec_" + "0" * 27, "rec_" + "8" + "0" * 25,
                                    "rec_" + "0" * 25 + "I", "rec_" + "0" * 25 + "u", "REC_" + "0" * 26,
                                    "pol_" + "0" * 26, "", 12])
def test_create_refuses_malformed_ids(env, refusing, bad_id):
    t = refusing
    err = assert_error(env.create_record(t.admin, {"id": bad_id, "title": "t", "type": "x"}, expect=None),
                       422, "validation_failed")
    assert ["body", "id"] in [d["loc"] for d in err["details"]]
    assert stored_count(env, t.id) == 0


def test_field_lengths(env):
    t = quiet(env)
    ok = env.create_record(t.admin, {"title": "x" * 200, "type": "y" * 64, "site": "z" * 64}).body
    assert (len(ok["title"]), len(ok["type"]), len(ok["site"])) == (200, 64, 64)
    for field, value in (("title", "x" * 201), ("type", "y" * 65), ("site", "z" * 65), ("title", ""),
                         ("type", ""), ("site", ""), ("title", None), ("type", None), ("title", 7),
                         ("site", 7), ("site", ["a"]), ("status", "done"), ("status", None),
                         ("payload", [1]), ("payload", "x"), ("payload", None)):
        body = {"title": "t", "type": "x"}
        body[field] = value
        err = assert_error(env.create_record(t.admin, body, expect=None), 422, "validation_failed")
        assert err["details"][0]["loc"] == ["body", field], (field, value, err)
        assert err["message"] == err["details"][0]["msg"]
    err = assert_error(env.create_record(t.admin, {}, expect=None), 422, "validation_failed")
    assert sorted((d["loc"][1], d["type"]) for d in err["details"]) == [("title", "missing"), ("type", "missing")]
    assert len(env.record_rows(t.id)) == 1


def test_field_lengths_count_characters(env):
    """Lengths are characters, not bytes (a 200-character title in French
    or with symbols is fine)."""
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "é" * 200, "type": "ü" * 64, "site": "✓" * 64}, expect=None)
    assert rec.status == 201, rec
    assert stored(env, t.id, rec.body["id"])["title"] == "é" * 200
    for field, value in (("title", "é" * 201), ("type", "ü" * 65), ("site", "✓" * 65)):
        body = {"title": "t", "type": "x", field: value}
        assert_error(env.create_record(t.admin, body, expect=None), 422, "validation_failed")


def test_unknown_fields_refused(env):
    t = quiet(env)
    for extra in ({"causal": "0" * 26}, {"deleted": True}, {"created_at": "2020-01-01T00:00:00Z"},
                  {"Title": "x"}, {"size": 1}):
        err = assert_error(env.create_record(t.admin, dict({"title": "t", "type": "x"}, **extra), expect=None),
                           422, "validation_failed")
        assert err["details"][0]["loc"] == ["body", list(extra)[0]]
    assert env.record_rows(t.id) == []


def test_payload_limit(env):
    """[records] max_payload (256k) on the payload's compact JSON: 413; the
    whole body above [limits] max_body_size (1m): 413 from the core."""
    t = quiet(env)
    limit = 256 * 1024
    exact = {"b": "x" * (limit - compact_size({"b": ""}))}
    assert compact_size(exact) == limit
    rec = env.create_record(t.admin, {"title": "at the limit", "type": "x", "payload": exact}).body
    assert rec["size"] == limit and stored(env, t.id, rec["id"])["size"] == limit
    over = {"b": exact["b"] + "x"}
    err = assert_error(env.create_record(t.admin, {"title": "over", "type": "x", "payload": over}, expect=None),
                       413, "payload_too_large")
    assert "262144" in err["message"]
    # a patch that would grow it over the limit: its payload is what is checked
    assert_error(env.patch_record(t.admin, rec["id"], {"payload": over}, causal=rec["causal"], expect=None),
                 413, "payload_too_large")
    huge = {"title": "huge", "type": "x", "payload": {"b": "x" * (1024 * 1024)}}
    assert env.create_record(t.admin, huge, expect=None).status == 413
    assert [r["title"] for r in env.record_rows(t.id)] == ["at the limit"]
    assert stored(env, t.id, rec["id"])["causal"] == rec["causal"]


# ============================================================ Idempotency-Key

def raw_post(env, key, body, idem):
    """The bytes of POST /v1/records with BODY and Idempotency-Key IDEM."""
    data = json.dumps(body).encode()
    return req("POST", "/v1/records", headers=[("X-API-Key", key), ("Content-Type", "application/json"),
                                               ("Idempotency-Key", idem)], body=data)


def test_replay_after_lost_response(env):
    """The client sends the POST and loses the connection before the answer
    arrives; the server did the work.  Retrying with the same key answers
    what the first request would have answered, and stores nothing twice."""
    t = quiet(env)
    body = {"title": "Pressure check", "type": "inspection", "site": "alpha", "payload": {"psi": 118}}
    s = socket.create_connection((env.d.host, env.d.port), timeout=5)
    s.sendall(raw_post(env, t.admin, body, "lost-1"))
    s.close()  # gone before reading a byte of the answer
    assert wait_for(lambda: env.record_rows(t.id), 5), "the server did not act on the request"
    for _ in range(50):  # in flight until its transaction ends
        r = env.create_record(t.admin, body, idem="lost-1", expect=None)
        if r.status != 409:
            break
        assert r.headers.get("retry-after") == "1"
        time.sleep(0.05)
    assert r.status == 201 and r.replayed, r
    first = events(env, t.id, "record.created")
    assert len(first) == 1 and r.body == first[0]["payload"]  # exactly what the first answer held
    assert json.loads(env.idempotency_rows(t.id, "lost-1")[0]["body"]) == r.body
    assert [row["id"] for row in env.record_rows(t.id)] == [r.body["id"]]
    # and again: same answer, still one record
    assert env.create_record(t.admin, body, idem="lost-1").body == r.body
    assert len(env.record_rows(t.id)) == 1


def test_key_reused_with_another_body(env):
    t = quiet(env)
    first = env.create_record(t.admin, {"title": "a", "type": "x"}, idem="reuse-1").body
    before = snapshot(env, t.id)
    for other in ({"title": "b", "type": "x"}, {"title": "a", "type": "x", "site": None},
                  {"title": "a", "type": "x", "payload": {}}):
        assert_error(env.create_record(t.admin, other, idem="reuse-1", expect=None), 422, "idempotency_key_reused")
    # the same key on another route is another request too
    assert_error(env.patch_record(t.admin, first["id"], {"title": "c"}, causal=first["causal"], idem="reuse-1",
                                  expect=None), 422, "idempotency_key_reused")
    assert_error(env.delete_record(t.admin, first["id"], idem="reuse-1", expect=None), 422,
                 "idempotency_key_reused")
    assert snapshot(env, t.id) == before
    # members in another order are the same request
    again = env.create_record(t.admin, b'{"type":"x","title":"a"}', idem="reuse-1")
    assert again.replayed and again.body == first


def test_patch_and_delete_replay(env):
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "a", "type": "x"}).body
    p1 = env.patch_record(t.admin, rec["id"], {"title": "b"}, causal=rec["causal"], idem="patch-1")
    assert not p1.replayed
    # the causal token is stale now, but the replay answers the first outcome, not a conflict
    p2 = env.patch_record(t.admin, rec["id"], {"title": "b"}, causal=rec["causal"], idem="patch-1")
    assert p2.status == 200 and p2.replayed and p2.body == p1.body
    assert len(events(env, t.id, "record.updated")) == 1 and events(env, t.id, "record.conflict") == []
    d1 = env.delete_record(t.admin, rec["id"], causal=p1.body["causal"], idem="del-1")
    d2 = env.delete_record(t.admin, rec["id"], causal=p1.body["causal"], idem="del-1")
    assert d2.replayed and d2.body == d1.body and d1.body["deleted"]
    assert len(events(env, t.id, "record.deleted")) == 1
    assert sorted(r["key"] for r in env.idempotency_rows(t.id)) == ["del-1", "patch-1"]
    # the replay of a change whose record moved on is still the first answer
    p3 = env.patch_record(t.admin, rec["id"], {"title": "b"}, causal=rec["causal"], idem="patch-1")
    assert p3.status == 200 and p3.body == p1.body and not p3.body["deleted"]


def test_conflict_is_not_stored_for_the_key(env):
    """Only applied changes are remembered for a key: a conflict answered
    with a key is worked out again (409 again, another record.conflict)
    when the same request comes back."""
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "a", "type": "x"}).body
    env.patch_record(t.admin, rec["id"], {"title": "b"}, causal=rec["causal"])
    for _ in range(2):
        assert_error(env.patch_record(t.admin, rec["id"], {"title": "c"}, causal=rec["causal"], idem="stale-1",
                                      expect=None), 409, "record.conflict")
    assert env.idempotency_rows(t.id) == []
    assert len(events(env, t.id, "record.conflict")) == 2
    # fixed (the current token), the same key runs: nothing was stored for it
    cur = env.get_record(t.admin, rec["id"]).body
    done = env.patch_record(t.admin, rec["id"], {"title": "c"}, causal=cur["causal"], idem="stale-1")
    assert not done.replayed and done.body["title"] == "c"
    assert json.loads(env.idempotency_rows(t.id, "stale-1")[0]["body"]) == done.body


@pytest.mark.parametrize("bad", ["", " ", "a b", "x" * 256, 'a"b', '""', "tab\there", "caf\u00e9"])
def test_invalid_idempotency_keys(env, refusing, bad):
    t = refusing
    r = env.create_record(t.admin, {"title": "a", "type": "x"}, idem=bad, expect=None)
    assert_error(r, 400, "invalid_idempotency_key")
    assert stored_count(env, t.id) == 0


def test_idempotency_key_edges(env):
    t = quiet(env)
    longest = "k" * 255
    first = env.create_record(t.admin, {"title": "a", "type": "x"}, idem=longest).body
    assert env.idempotency_rows(t.id)[0]["key"] == longest
    assert env.create_record(t.admin, {"title": "a", "type": "x"}, idem=longest).replayed
    # the draft's sf-string form: "abc" and abc are one key
    q = env.create_record(t.admin, {"title": "q", "type": "x"}, idem='"quoted-1"').body
    r = env.create_record(t.admin, {"title": "q", "type": "x"}, idem="quoted-1")
    assert r.replayed and r.body == q
    assert sorted(row["key"] for row in env.idempotency_rows(t.id)) == sorted([longest, "quoted-1"])
    # keys are case-sensitive and every visible character counts
    other = env.create_record(t.admin, {"title": "a", "type": "x"}, idem="K" * 255)
    assert not other.replayed and other.body["id"] != first["id"]
    sym = "!#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
    s1 = env.create_record(t.admin, {"title": "s", "type": "x"}, idem=sym).body
    assert env.create_record(t.admin, {"title": "s", "type": "x"}, idem=sym).body == s1
    assert len(env.record_rows(t.id)) == 4


def test_keys_are_per_tenant(env):
    t1, t2 = quiet(env, "One"), quiet(env, "Two")
    body = {"title": "same", "type": "x"}
    a = env.create_record(t1.admin, body, idem="shared-key").body
    b = env.create_record(t2.admin, body, idem="shared-key")
    assert not b.replayed and b.body["id"] != a["id"]
    # each tenant's replay is its own answer; another body is fine in the other tenant
    assert env.create_record(t1.admin, body, idem="shared-key").body == a
    assert env.create_record(t2.admin, body, idem="shared-key").body == b.body
    c = env.create_record(t2.admin, {"title": "other", "type": "x"}, idem="t1-only")
    assert env.create_record(t1.admin, {"title": "t1", "type": "x"}, idem="t1-only").body["id"] != c.body["id"]
    assert len(env.record_rows(t1.id)) == 2 and len(env.record_rows(t2.id)) == 2
    assert {r["key"] for r in env.idempotency_rows(t1.id)} == {r["key"] for r in env.idempotency_rows(t2.id)} == \
        {"shared-key", "t1-only"}


def test_key_in_flight(env):
    """While the first request with a key is still running, the same key
    answers 409 idempotency_key_in_flight with Retry-After: 1.  Writers are
    held with a lock from outside so the first request stays in flight.  On
    PostgreSQL the first request takes the key before it waits for the lock,
    so a second one must see 409.  On SQLite a writer waits for the lock at
    BEGIN, before it takes the key, so the second request waits too and is
    then a replay (409 only if it slips in between commit and release)."""
    t = quiet(env)
    body = {"title": "slow", "type": "x"}
    first, others = [], []

    def post(out):
        out.append(env.create_record(t.admin, body, idem="flight-1", expect=None))

    with hold_writers(env.storage) as lock:
        a = threading.Thread(target=post, args=(first,))
        a.start()
        if env.storage.engine == "pgsql":
            assert wait_for(lambda: lock.waiters() >= 1, 5), "the first request did not reach the lock"
        else:
            time.sleep(0.2)
        threads = []
        # a connection may land on the worker the first request blocks: try
        # fresh ones until one answers (those stuck answer after the lock);
        # on SQLite every one waits
        for _ in range(8 if env.storage.engine == "pgsql" else 1):
            th = threading.Thread(target=post, args=(others,))
            th.start()
            threads.append(th)
            th.join(0.5 if env.storage.engine == "pgsql" else 0.2)
            if others:
                break
        early = list(others)
        assert not first  # still held
    a.join(10)
    for th in threads:
        th.join(10)
    assert len(first) == 1 and first[0].status == 201 and not first[0].replayed, first
    if env.storage.engine == "pgsql":
        assert early and early[0].status == 409, early
    for r in early:
        if r.status == 409:
            assert_error(r, 409, "idempotency_key_in_flight")
            assert r.headers.get("retry-after") == "1"
    for r in others:
        assert (r.status == 201 and r.replayed and r.body == first[0].body) or \
            (r.status == 409 and r.error_code() == "idempotency_key_in_flight"), r
    assert len(env.record_rows(t.id)) == 1
    # once the first is done, the key replays
    assert env.create_record(t.admin, body, idem="flight-1").body == first[0].body


def test_same_key_from_many_threads(env):
    """Sixteen identical requests at once: one creates, every other answer is
    its replay or 409 in flight, and exactly one record exists."""
    t = quiet(env)
    body = {"title": "burst", "type": "x", "payload": {"blob": "y" * 200_000}}
    results = []
    barrier = threading.Barrier(16)

    def go():
        barrier.wait()
        results.append(env.create_record(t.admin, body, idem="burst-1", expect=None))

    threads = [threading.Thread(target=go) for _ in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    assert len(results) == 16
    created = [r for r in results if r.status == 201 and not r.replayed]
    assert len(created) == 1, [(r.status, r.replayed) for r in results]
    for r in results:
        if r is created[0]:
            continue
        assert (r.status == 201 and r.replayed and r.body == created[0].body) or \
            (r.status == 409 and r.error_code() == "idempotency_key_in_flight"
             and r.headers.get("retry-after") == "1"), r
    assert len(env.record_rows(t.id)) == 1 and len(env.idempotency_rows(t.id)) == 1
    assert len(events(env, t.id, "record.created")) == 1


def test_key_expiry(rs_daemon):
    """[records] idempotency_ttl: after it, the key is free again (the old
    answer is ignored at once and its row replaced)."""
    env = rs_daemon({"records": {"idempotency_ttl": "300ms"}})
    t = quiet(env)
    body = {"title": "a", "type": "x"}
    first = env.create_record(t.admin, body, idem="ttl-1").body
    row = env.idempotency_rows(t.id, "ttl-1")[0]
    assert row["expires_ms"] - row["created_ms"] == 300
    assert env.create_record(t.admin, body, idem="ttl-1").replayed
    time.sleep(max(0.0, row["expires_ms"] / 1000.0 - time.time()) + 0.1)
    second = env.create_record(t.admin, body, idem="ttl-1")
    assert second.status == 201 and not second.replayed and second.body["id"] != first["id"]
    rows = env.idempotency_rows(t.id, "ttl-1")
    assert len(rows) == 1 and json.loads(rows[0]["body"]) == second.body and rows[0]["created_ms"] > row["created_ms"]
    # an expired key may name another request
    time.sleep(max(0.0, rows[0]["expires_ms"] / 1000.0 - time.time()) + 0.1)
    third = env.create_record(t.admin, {"title": "different", "type": "x"}, idem="ttl-1")
    assert third.status == 201 and not third.replayed
    assert len(env.record_rows(t.id)) == 3


# ====================================================== causal tokens, conflicts

def test_conflict_flow(env):
    """Two clients hold version 1; the first edit wins, the second gets 409
    with the current record and a record.conflict event is stored; the
    loser retries on the current version and wins."""
    t = quiet(env)
    v1 = env.create_record(t.admin, {"title": "Pump 7", "type": "inspection", "payload": {"psi": 100}}).body
    alice, bob = t.admin, t.new_key("operator")
    v2 = env.patch_record(alice, v1["id"], {"payload": {"psi": 110}}, causal=v1["causal"]).body
    before = stored(env, t.id, v1["id"])
    r = env.patch_record(bob, v1["id"], {"title": "Pump 7 (checked)"}, causal=v1["causal"], expect=None)
    err = assert_error(r, 409, "record.conflict")
    assert err["current"] == v2 == env.get_record(t.viewer, v1["id"]).body
    assert stored(env, t.id, v1["id"]) == before  # nothing written
    conflicts = events(env, t.id, "record.conflict")
    assert len(conflicts) == 1
    assert conflicts[0]["payload"] == {"id": v1["id"], "expected": v1["causal"], "current": v2["causal"],
                                       "record": v2}
    v3 = env.patch_record(bob, v1["id"], {"title": "Pump 7 (checked)"}, causal=err["current"]["causal"]).body
    assert v3["title"] == "Pump 7 (checked)" and v3["payload"] == {"psi": 110} and v3["causal"] > v2["causal"]
    types = [e["type"] for e in events(env, t.id) if e["type"].startswith("record.")]
    assert types == ["record.created", "record.updated", "record.conflict", "record.updated"]


def test_causal_tokens_strictly_increase(env):
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "a", "type": "x"}).body
    tokens = [rec["causal"]]
    for i in range(25):  # many in the same millisecond
        rec = env.patch_record(t.admin, rec["id"], {"payload": {"i": i}}, causal=rec["causal"]).body
        tokens.append(rec["causal"])
    assert all(CAUSAL_RE.match(c) for c in tokens)
    assert all(a < b for a, b in zip(tokens, tokens[1:])), tokens
    assert stored(env, t.id, rec["id"])["causal"] == tokens[-1]
    seqs = [e["seq"] for e in events(env, t.id) if e["type"] == "record.updated"]
    assert [e["payload"]["causal"] for e in events(env, t.id, "record.updated")] == tokens[1:]
    assert seqs == sorted(seqs) and stored(env, t.id, rec["id"])["change_seq"] == seqs[-1]
    # an older token, even a recent one, is a conflict
    assert_error(env.patch_record(t.admin, rec["id"], {"title": "z"}, causal=tokens[-2], expect=None),
                 409, "record.conflict")


def test_concurrent_edits_of_one_version(env):
    """Ten writers send an edit on the same version at once: exactly one
    wins, nine get 409 and nine record.conflict events are stored."""
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "a", "type": "x"}).body
    results = []
    barrier = threading.Barrier(10)

    def go(i):
        barrier.wait()
        results.append(env.patch_record(t.admin, rec["id"], {"title": "w%d" % i}, causal=rec["causal"],
                                        expect=None))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(10)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(20)
    wins = [r for r in results if r.status == 200]
    assert len(wins) == 1, [r.status for r in results]
    assert sorted(r.status for r in results) == [200] + [409] * 9
    assert all(r.error_code() == "record.conflict" for r in results if r.status == 409)
    assert stored(env, t.id, rec["id"])["title"] == wins[0].body["title"]
    assert len(events(env, t.id, "record.updated")) == 1 and len(events(env, t.id, "record.conflict")) == 9


def test_patch_rules(env):
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "a", "type": "x", "status": "draft"}).body
    rid = rec["id"]
    before = snapshot(env, t.id)
    assert_error(env.patch_record(t.admin, rid, {"title": "b"}, expect=None), 428, "causal_required")
    err = assert_error(env.patch_record(t.admin, rid, {"title": "b", "causal": 5}, expect=None),
                       422, "validation_failed")
    for patch in ({"causal": "not-a-token"}, {"id": crockford_id(), "causal": rec["causal"]},
                  {"deleted": True, "causal": rec["causal"]}, {"title": None, "causal": rec["causal"]},
                  {"type": "", "causal": rec["causal"]}, {"status": "gone", "causal": rec["causal"]},
                  {"payload": [1], "causal": rec["causal"]}, {"updated_at": "x", "causal": rec["causal"]}):
        err = assert_error(env.patch_record(t.admin, rid, patch, expect=None), 422, "validation_failed")
        if "id" in patch:
            assert "cannot change" in err["message"]
    assert_error(env.patch_record(t.admin, crockford_id(), {"title": "b"}, causal=rec["causal"], expect=None),
                 404, "record.not_found")
    assert_error(env.patch_record(t.admin, "rec_nope", {"title": "b"}, causal=rec["causal"], expect=None),
                 404, "record.not_found")
    assert snapshot(env, t.id) == before
    # an edit without "status" needs syncing again; with one, it says
    e1 = env.patch_record(t.admin, rid, {"site": "beta"}, causal=rec["causal"]).body
    assert e1["status"] == "queued" and e1["site"] == "beta"
    e2 = env.patch_record(t.admin, rid, {"status": "failed", "site": None}, causal=e1["causal"]).body
    assert e2["status"] == "failed" and e2["site"] is None
    # an empty edit is still a new version
    e3 = env.patch_record(t.admin, rid, {}, causal=e2["causal"]).body
    assert e3["causal"] > e2["causal"] and e3["status"] == "queued"
    assert as_shown(stored(env, t.id, rid)) == shown(e3)


def test_merge_patch(env):
    """payload edits follow RFC 7396: objects merge, null removes a member,
    anything else replaces; "payload": null empties it."""
    t = quiet(env)
    p0 = {"a": {"b": 1, "c": 2}, "d": [1, 2, 3], "e": "x", "f": {"g": {"h": 1}}, "keep": True}
    rec = env.create_record(t.admin, {"title": "m", "type": "x", "payload": p0}).body
    patch = {"a": {"b": None, "z": 3}, "d": [9], "e": {"f": None, "g": 1}, "f": {"g": {"i": 2}},
             "missing": None, "new": {"deep": {"x": None, "y": [None]}}}
    r = env.patch_record(t.admin, rec["id"], {"payload": patch}, causal=rec["causal"]).body
    want = {"a": {"c": 2, "z": 3}, "d": [9], "e": {"g": 1}, "f": {"g": {"h": 1, "i": 2}}, "keep": True,
            "new": {"deep": {"y": [None]}}}
    assert r["payload"] == want
    assert r["size"] == compact_size(want) == stored(env, t.id, rec["id"])["size"]
    assert json.loads(stored(env, t.id, rec["id"])["payload"]) == want
    assert (r["title"], r["type"]) == ("m", "x")
    r2 = env.patch_record(t.admin, rec["id"], {"payload": {"keep": None}}, causal=r["causal"]).body
    assert "keep" not in r2["payload"]
    r3 = env.patch_record(t.admin, rec["id"], {"payload": None}, causal=r2["causal"]).body
    assert r3["payload"] == {} and r3["size"] == 2
    r4 = env.patch_record(t.admin, rec["id"], {"payload": {}}, causal=r3["causal"]).body
    assert r4["payload"] == {}


# =============================================================== tombstones

def test_tombstones(env):
    t = quiet(env)
    keep = env.create_record(t.admin, {"title": "keep", "type": "x"}).body
    rec = env.create_record(t.admin, {"title": "gone", "type": "x", "site": "alpha"}).body
    # a stale causal refuses the delete, with the current record and a conflict event
    v2 = env.patch_record(t.admin, rec["id"], {"title": "gone soon"}, causal=rec["causal"]).body
    for how in ("query", "if-match", "body"):
        err = assert_error(env.delete_record(t.admin, rec["id"], causal=rec["causal"], how=how, expect=None),
                           409, "record.conflict")
        assert err["current"] == v2
    assert len(events(env, t.id, "record.conflict")) == 3
    assert stored(env, t.id, rec["id"])["deleted_ms"] is None
    tomb = env.delete_record(t.operator, rec["id"], causal=v2["causal"], how="if-match").body
    assert tomb["deleted"] and tomb["causal"] > v2["causal"] and tomb["title"] == "gone soon"
    # out of lists, 410 on GET and PATCH, the same tombstone when deleted again
    assert [r["id"] for r in env.list_records(t.viewer)] == [keep["id"]]
    assert [r["id"] for r in env.list_records(t.viewer, site="alpha")] == []
    assert assert_error(env.get_record(t.viewer, rec["id"], expect=None), 410, "record.deleted")["current"] == tomb
    err = assert_error(env.patch_record(t.admin, rec["id"], {"title": "back"}, causal=tomb["causal"], expect=None),
                       410, "record.deleted")
    assert err["current"] == tomb
    assert env.delete_record(t.admin, rec["id"]).body == tomb
    assert env.delete_record(t.admin, rec["id"], causal=tomb["causal"], how="body").body == tomb
    assert_error(env.delete_record(t.admin, rec["id"], causal=v2["causal"], expect=None), 410, "record.deleted")
    # stays in storage and in the outbox, once
    row = stored(env, t.id, rec["id"])
    assert row["deleted_ms"] is not None and row["causal"] == tomb["causal"]
    deleted = events(env, t.id, "record.deleted")
    assert [e["payload"] for e in deleted] == [tomb] and row["change_seq"] == deleted[0]["seq"]
    # its id stays taken
    assert_error(env.create_record(t.admin, {"id": rec["id"], "title": "again", "type": "x"}, expect=None),
                 409, "record.exists")
    assert_error(env.delete_record(t.admin, crockford_id(), expect=None), 404, "record.not_found")


def test_write_answers_match_what_is_stored(env):
    """The record a PATCH or DELETE answers (and emits) is the one stored:
    same updated_at / deleted_at as GET and the feed will show."""
    t = quiet(env)
    for i in range(8):
        rec = env.create_record(t.admin, {"title": "t%d" % i, "type": "x"}).body
        new = env.patch_record(t.admin, rec["id"], {"title": "u"}, causal=rec["causal"]).body
        assert env.get_record(t.admin, rec["id"]).body == new
        gone = env.delete_record(t.admin, rec["id"]).body
        assert env.get_record(t.admin, rec["id"], expect=410).body["error"]["current"] == gone
        row = stored(env, t.id, rec["id"])
        assert row["updated_ms"] == ms(gone["updated_at"]) and row["deleted_ms"] == ms(gone["deleted_at"])
        assert events(env, t.id, "record.deleted")[-1]["payload"] == gone


def test_reads_see_every_answered_write_while_workers_are_busy(env):
    """A write answered on one connection is seen by the next read on any
    other, whichever worker each lands on, while other clients keep every
    worker reading.  On SQLite a worker's reads share one read transaction
    per loop turn (docs/storage.md, "Shared reads"): a commit anywhere in
    the daemon must end it before the next read."""
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "v0", "type": "x"}).body
    stop = threading.Event()
    failures = []

    def keep_reading():
        # keep-alive readers: every worker is mid-turn, with reads, when the
        # writes below land
        while not stop.is_set():
            r = env.get_record(t.admin, rec["id"], expect=None)
            if r.status != 200:
                failures.append(r.status)

    readers = [threading.Thread(target=keep_reading) for _ in range(4)]
    for th in readers:
        th.start()
    try:
        for i in range(1, 121):
            new = env.patch_record(t.admin, rec["id"], {"title": "v%d" % i}, causal=rec["causal"]).body
            seen = env.get_record(t.admin, rec["id"]).body
            assert (seen["title"], seen["causal"]) == ("v%d" % i, new["causal"]), i
            made = env.create_record(t.admin, {"title": "n%d" % i, "type": "x"}).body
            assert env.get_record(t.admin, made["id"]).body == made, i
            rec = new
    finally:
        stop.set()
        for th in readers:
            th.join(10)
    assert not failures


# =================================================================== listing

def test_pagination_under_concurrent_inserts(env):
    """Pages follow the keyset cursor: while another client inserts (and
    edits), paging never repeats a record and shows every record that
    existed when paging began exactly once, newest first."""
    t = quiet(env)
    existing = set()
    lock = threading.Lock()

    def create(n):
        for i in range(n):
            r = env.create_record(t.admin, {"title": "pre%d" % i, "type": "x"}).body
            with lock:
                existing.add(r["id"])

    threads = [threading.Thread(target=create, args=(15,)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(existing) == 60
    ids = sorted(existing)
    stop = threading.Event()
    inserted, errors = [], []

    def writer():
        i = 0
        try:
            while not stop.is_set():
                body = {"title": "new%d" % i, "type": "x"}
                if i % 3 == 1:
                    body["id"] = crockford_id()  # client-made: may sort anywhere
                inserted.append(env.create_record(t.operator, body).body["id"])
                victim = ids[i % len(ids)]
                cur = env.get_record(t.operator, victim).body
                env.patch_record(t.operator, victim, {"payload": {"i": i}}, causal=cur["causal"], expect=(200, 409))
                i += 1
        except Exception as e:  # reported below
            errors.append(repr(e))

    w = threading.Thread(target=writer)
    w.start()
    try:
        assert wait_for(lambda: len(inserted) >= 3, 5)
        seen, pages, cursor = [], 0, None
        while True:
            body = env.list_page(t.viewer, limit=7, cursor=cursor).body
            seen.extend(r["id"] for r in body["records"])
            pages += 1
            assert len(body["records"]) <= 7
            cursor = body["next_cursor"]
            if not cursor:
                break
            time.sleep(0.005)
    finally:
        stop.set()
        w.join(10)
    assert not errors, errors
    assert len(inserted) >= 3 and pages >= 9
    assert len(seen) == len(set(seen)), "a record was shown twice"
    assert seen == sorted(seen, reverse=True)
    assert existing <= set(seen), "records that existed before paging were skipped: %s" % (existing - set(seen))
    assert set(seen) <= existing | set(inserted)


def test_filters(env):
    t = quiet(env)
    mk = lambda **kw: env.create_record(t.admin, dict({"title": "r", "type": "inspection"}, **kw)).body
    a = mk(status="draft", site="alpha")
    b = mk(status="queued", site="alpha", type="repair")
    c = mk(status="synced", site="beta")
    d = mk(status="failed")
    ids = lambda recs: [r["id"] for r in recs]
    newest_first = lambda *recs: sorted((r["id"] for r in recs), reverse=True)
    assert ids(env.list_records(t.viewer)) == newest_first(a, b, c, d)
    assert ids(env.list_records(t.viewer, status="draft")) == [a["id"]]
    assert ids(env.list_records(t.viewer, site="alpha")) == newest_first(a, b)
    assert ids(env.list_records(t.viewer, type="repair")) == [b["id"]]
    assert ids(env.list_records(t.viewer, type="inspection", site="alpha")) == [a["id"]]
    assert ids(env.list_records(t.viewer, type="inspection", site="alpha", status="queued")) == []
    assert ids(env.list_records(t.viewer, site="gamma")) == []
    # updated_since: records changed at or after the time
    cut = stored(env, t.id, d["id"])["updated_ms"] + 1
    time.sleep(0.01)
    e = env.patch_record(t.admin, a["id"], {"title": "edited"}, causal=a["causal"]).body
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(cut / 1000)) + ".%03dZ" % (cut % 1000)
    assert ids(env.list_records(t.viewer, updated_since=since)) == [e["id"]]
    assert ids(env.list_records(t.viewer, updated_since="2000-01-01T00:00:00Z")) == newest_first(a, b, c, d)
    assert ids(env.list_records(t.viewer, updated_since="2999-01-01T00:00:00+02:00")) == []
    # bad filters
    for q, code in (("status=done", "invalid_status"), ("status=", "invalid_status"),
                    ("updated_since=yesterday", "invalid_updated_since"),
                    ("updated_since=2024-13-01T00:00:00Z", "invalid_updated_since"),
                    ("cursor=zzz", "invalid_cursor"), ("cursor=eyJwIjo1fQ", "invalid_cursor"),
                    ("limit=0", "invalid_limit"), ("limit=-1", "invalid_limit"), ("limit=201", "invalid_limit"),
                    ("limit=abc", "invalid_limit"), ("limit=1.5", "invalid_limit"), ("limit=", "invalid_limit")):
        assert_error(env.api("GET", "/v1/records?" + q, key=t.viewer), 400, code)


def test_page_sizes(env):
    t = quiet(env)
    made = []

    def create(n):
        for i in range(n):
            made.append(env.create_record(t.admin, {"title": "p%d" % i, "type": "x"}).body["id"])

    threads = [threading.Thread(target=create, args=(13,)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert len(made) == 52
    first = env.list_page(t.viewer).body  # default 50
    assert len(first["records"]) == 50 and first["next_cursor"]
    rest = env.list_page(t.viewer, cursor=first["next_cursor"]).body
    assert len(rest["records"]) == 2 and rest["next_cursor"] is None
    assert [r["id"] for r in first["records"] + rest["records"]] == sorted(made, reverse=True)
    assert len(env.list_page(t.viewer, limit=200).body["records"]) == 52
    one = env.list_page(t.viewer, limit=1).body
    assert len(one["records"]) == 1 and one["next_cursor"]
    exact = env.list_page(t.viewer, limit=52).body
    assert len(exact["records"]) == 52 and exact["next_cursor"] is None
    # a cursor is only a position: it works for another limit and filter
    assert len(env.list_page(t.viewer, limit=200, cursor=one["next_cursor"]).body["records"]) == 51


# ========================================================== tenants and roles

def test_cross_tenant_access_refused(env):
    t1, t2 = quiet(env, "Owner"), quiet(env, "Intruder")
    secret_title = "Only for the owner 7f3a"
    rec = env.create_record(t1.admin, {"title": secret_title, "type": "x", "payload": {"pin": 4242}}).body
    before = snapshot(env, t1.id)
    rid = rec["id"]
    replies = [env.get_record(t2.admin, rid, expect=None),
               env.patch_record(t2.admin, rid, {"title": "mine"}, causal=rec["causal"], expect=None),
               env.patch_record(t2.admin, rid, {"title": "mine"}, causal=rec["causal"], idem="x1", expect=None),
               env.delete_record(t2.admin, rid, expect=None),
               env.delete_record(t2.admin, rid, causal=rec["causal"], expect=None),
               env.get_record(t2.viewer, rid, expect=None)]
    for r in replies:
        assert_error(r, 404, "record.not_found")
        assert secret_title not in json.dumps(r.body) and "4242" not in json.dumps(r.body)
        assert rec["causal"] not in json.dumps(r.body)
    assert env.list_records(t2.admin) == []
    assert env.list_records(t2.admin, type="x") == []
    assert snapshot(env, t1.id) == before
    # the other tenant's id is free in this tenant (ids are per tenant) and changes nothing there
    mine = env.create_record(t2.admin, {"id": rid, "title": "mine", "type": "x"}).body
    assert mine["id"] == rid and mine["title"] == "mine"
    assert env.get_record(t1.admin, rid).body == rec
    assert env.get_record(t2.admin, rid).body == mine
    # a tenant's cursor only ever pages that tenant's records
    env.create_record(t1.admin, {"title": "second", "type": "x"})
    page = env.list_page(t1.admin, limit=1).body
    assert [r["id"] for r in env.list_page(t2.admin, cursor=page["next_cursor"]).body["records"]] in ([], [rid])
    assert secret_title not in json.dumps(env.list_records(t2.admin))


def test_viewers_cannot_write(env):
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "a", "type": "x"}).body
    before = snapshot(env, t.id)
    for r in (env.create_record(t.viewer, {"title": "v", "type": "x"}, expect=None),
              env.create_record(t.viewer, {"title": "v", "type": "x"}, idem="v-1", expect=None),
              env.patch_record(t.viewer, rec["id"], {"title": "v"}, causal=rec["causal"], expect=None),
              env.delete_record(t.viewer, rec["id"], expect=None),
              env.api("POST", "/v1/records", {"title": "v", "type": "x"}, key=env.token(t.viewer), how="bearer")):
        assert_error(r, 403, "forbidden")
    assert snapshot(env, t.id) == before
    assert env.get_record(t.viewer, rec["id"]).body == rec
    # operators write
    op = env.patch_record(t.operator, rec["id"], {"title": "op"}, causal=rec["causal"]).body
    assert op["updated_by"] != rec["updated_by"]
    # no credential or a bad one: 401 on every route
    for method, path in (("GET", "/v1/records"), ("GET", "/v1/records/" + rec["id"]), ("POST", "/v1/records"),
                         ("PATCH", "/v1/records/" + rec["id"]), ("DELETE", "/v1/records/" + rec["id"])):
        for key in (None, "rs_live_nope.nope"):
            r = env.api(method, path, {"title": "a", "type": "x"}, key=key)
            assert r.status == 401, (method, path, r)


# ======================================================== malformed requests

MALFORMED = [
    (b"not json", 400, "invalid_json"),
    (b"", 400, "invalid_json"),
    (b"[]", 400, "invalid_json"),
    (b'[{"title":"a","type":"x"}]', 400, "invalid_json"),
    (b'"text"', 400, "invalid_json"),
    (b"null", 400, "invalid_json"),
    (b'{"title":"a","type":"x"', 400, "invalid_json"),
    (b'{"title":"a","title":"b","type":"x"}', 400, "invalid_json"),
    (b'{"title":"a","type":"x","payload":{"k":1,"k":2}}', 400, "invalid_json"),
    (b'{"title":"a","type":"x","payload":{"n":123456789012345678901234567890}}', 400, "invalid_json"),
    (b'{"title":"a","type":"x","payload":{"n":1e400}}', 400, "invalid_json"),
    (b'{"title":"a","type":"x","payload":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", 400, "invalid_json"),
    (b'{"title":"\xff\xfe","type":"x"}', 400, "invalid_json"),
    (b'{"title":"\xed\xa0\x80","type":"x"}', 400, "invalid_json"),
    (b'{"title":"a\\u0000b","type":"x"}', 400, "invalid_json"),
    (b'{"title":"\\ud800","type":"x"}', 400, "invalid_json"),
    (b"{'title':'a','type':'x'}", 400, "invalid_json"),
    (b'{"title":"a","type":"x",}', 400, "invalid_json"),
    (b'{"title":"a","type":"x"} trailing', 400, "invalid_json"),
    (b'{"title":NaN,"type":"x"}', 400, "invalid_json"),
    (b'{"title":1,"type":"x"}', 422, "validation_failed"),
    (b'{"title":true,"type":["x"]}', 422, "validation_failed"),
    (b'{"title":{"a":1},"type":"x"}', 422, "validation_failed"),
    (b'{"title":"a","type":"x","status":1}', 422, "validation_failed"),
    (b'{"title":"a","type":"x","payload":"{}"}', 422, "validation_failed"),
]


def test_malformed_bodies_change_nothing(env):
    t = quiet(env)
    rec = env.create_record(t.admin, {"title": "a", "type": "x"}).body
    before = snapshot(env, t.id)
    for raw, status, code in MALFORMED:
        for r in (env.create_record(t.admin, raw, expect=None),
                  env.create_record(t.admin, raw, idem="m-1", expect=None),
                  env.patch_record(t.admin, rec["id"], raw, expect=None)):
            err = assert_error(r, status, code)
            if code == "validation_failed":
                assert err["details"] and all(d["loc"][0] == "body" for d in err["details"])
        if raw and status == 400:  # DELETE reads its causal from a JSON body when one is sent
            assert_error(env.api("DELETE", "/v1/records/" + rec["id"], key=t.admin, raw=raw), 400, code)
    assert_error(env.api("DELETE", "/v1/records/" + rec["id"], key=t.admin, raw=b'{"causal":5}'),
                 422, "validation_failed")
    assert snapshot(env, t.id) == before
    assert env.get_record(t.admin, rec["id"]).body == rec


def test_strings_are_stored_verbatim(env):
    """SQL metacharacters, path traversal and control characters are data:
    stored and shown as sent, found by exact filters only."""
    t = quiet(env)
    nasty = {"title": "Robert'); DROP TABLE records_records;-- \" ` \\ %_*",
             "type": "../../etc/passwd", "site": "' OR '1'='1",
             "payload": {"q": "\"; DELETE FROM relay_events; --", "path": "..\\..\\windows\\system32",
                         "k'ey\"": "v\u0001\n\t", "%": "_", "emoji": "🛠️", "nul-ish": "\\u0000"}}
    rec = env.create_record(t.admin, nasty).body
    other = env.create_record(t.admin, {"title": "plain", "type": "inspection", "site": "alpha"}).body
    for k in ("title", "type", "site", "payload"):
        assert rec[k] == nasty[k]
    row = stored(env, t.id, rec["id"])
    assert (row["title"], row["type"], row["site"]) == (nasty["title"], nasty["type"], nasty["site"])
    assert json.loads(row["payload"]) == nasty["payload"]
    assert env.get_record(t.viewer, rec["id"]).body == rec
    q = lambda **kw: [r["id"] for r in env.list_records(t.viewer, **kw)]
    assert q(type=nasty["type"]) == [rec["id"]]
    assert q(site=nasty["site"]) == [rec["id"]]
    assert q(site="%") == [] and q(type="_%") == [] and q(site="alpha' OR '1'='1") == []
    assert sorted(q()) == sorted([rec["id"], other["id"]])
    assert {"records_records", "relay_events"} <= env.storage.tables()
    for path in ("/v1/records/..%2F..%2Fetc%2Fpasswd", "/v1/records/rec_%27%20OR%20%271%27%3D%271",
                 "/v1/records/" + urllib.parse.quote(rec["id"] + "' OR '1'='1")):
        r = env.api("GET", path, key=t.viewer)
        assert r.status == 404 and nasty["title"] not in json.dumps(r.body), (path, r)


def test_listing_on_a_linguistic_collation(make_daemon, engine, request, tmp_path):
    """A PostgreSQL database made with a linguistic locale (en_US.UTF-8 and
    the like) orders text differently from bytes: listing and paging must
    not depend on it."""
    st = linguistic_storage(engine, request, tmp_path)
    env = relaysync_daemon_factory(make_daemon, st)()
    t = quiet(env)
    made = sorted((env.create_record(t.admin, {"title": "r%d" % i, "type": "x"}).body["id"] for i in range(5)),
                  reverse=True)
    assert [r["id"] for r in env.list_page(t.viewer).body["records"]] == made
    assert [r["id"] for r in env.list_records(t.viewer, limit=2)] == made
