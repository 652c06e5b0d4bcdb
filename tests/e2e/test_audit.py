"""The audit plugin end to end, on SQLite and PostgreSQL, against a real
RelaySync daemon (users records policies sync audit):

  - what becomes an entry: every committed event of a tenant (kind
    "event": type, actor, target, event_id, event_time, data = payload)
    and every authenticated write, refused ones included (kind "request":
    actor, role, credential, method, route pattern, path, target, status,
    result, request_id = the X-Request-Id the client got); reads and
    unauthenticated requests are not recorded;
  - the hash chain checked here with hashlib alone (canonical body =
    compact JSON with sorted keys), signed checkpoints and signed receipts
    checked with the cryptography package, GET /v1/audit/verify and
    `relayctl audit verify|key`;
  - tampering straight in the database (a body, a column, a middle row,
    the last row, a consistent rewrite behind a checkpoint), each caught
    and the first bad entry named, by the API and by relayctl (exit 1);
  - evidence bundles: created, listed, downloaded, checked here, by the
    offline relay-audit-verify and by the server; redacted components;
    tampered bundles (a body, a hash, a dropped line, a swapped manifest,
    the wrong key) refused offline naming the entry, a bundle altered in
    the database refused by the server; validation and the size cap;
  - the SSE stream: live from the present, resumed with Last-Event-ID (or
    ?last_event_id=) while writes go on, without duplicates or gaps, type
    filter, heartbeats, bad ids, and a client that never reads cut off
    while the daemon's memory stays bounded;
  - filters and cursors of GET /v1/audit and /v1/audit/events;
  - tenants never see each other's entries, receipts, bundles or streams;
    only admins read the log (operator/viewer 403, no key 401);
  - the signing key: created 0600 in data_dir on first start, the same
    after a restart (the chain goes on), a malformed key file stops the
    daemon with a clear message.

Most tests share one daemon per engine and make a tenant of their own
(verification is per tenant, so tampering stays inside the test); the
key, restart and slow-consumer tests start their own daemon."""
import base64
import json
import os
import re
import stat
import threading
import time
import urllib.parse
import urllib.request

import pytest

from audit_support import (BUNDLE_MAX, CHECKPOINT_EVERY, ZERO_HASH, SSEClient, audit_rows, audit_sections,
                           bundle_files, canonical, check_chain, checkpoint_statement, entry_hash, entry_lines,
                           execute, head, key_id_of, make_bundle, receipt_statement, rewrite_chain, run_verifier,
                           set_columns, sha256_hex, signature_ok, verify_offline, with_lines)
from relaysync_support import _envs, rs_daemon  # noqa: F401 (fixtures)
from relaysync_support import crockford_id, shared_env, sql_quote, table_count, table_rows, wait_for
from users_support import key_parts, parse_time, rfc3339

AUD_ID = r"^aud_[0-9A-HJKMNP-TV-Z]{26}$"
EVB_ID = r"^evb_[0-9A-HJKMNP-TV-Z]{26}$"
ROUTES_GET = ["/v1/audit", "/v1/audit/events", "/v1/audit/verify", "/v1/audit/key"]


@pytest.fixture
def env(engine, request, _envs, tmp_path_factory):
    return shared_env(engine, request, _envs, tmp_path_factory, sections=audit_sections(), tag="audit")


# ================================================================ helpers

def kid(api_key):
    return key_parts(api_key)[0]


def listing(env, key, path="/v1/audit", **params):
    """Every entry of PATH?PARAMS, page by page (newest first)."""
    member = "events" if path.endswith("/events") else "entries"
    out, params = [], dict(params)
    for _ in range(1000):
        q = "&".join("%s=%s" % (k, v) for k, v in params.items())
        r = env.api("GET", path + ("?" + q if q else ""), key=key)
        assert r.status == 200, r
        assert set(r.body) == {member, "next_cursor"}, r.body
        out.extend(r.body[member])
        if not r.body["next_cursor"]:
            return out
        params["cursor"] = r.body["next_cursor"]
    raise AssertionError("never ended")


def settle(env, t, writes):
    """Waits until T's chain holds an entry for every event of T in
    relay_events and WRITES request entries (the writes the test made);
    returns the entries, oldest first, from the API."""
    def done():
        events = table_count(env.storage, "relay_events", "tenant = " + sql_quote(t.id))
        rows = audit_rows(env, t.id)
        got_e = sum(1 for r in rows if r["kind"] == "event")
        got_r = sum(1 for r in rows if r["kind"] == "request")
        assert got_r <= writes, (got_r, writes, [json.loads(r["body"]) for r in rows if r["kind"] == "request"])
        return got_e == events and got_r == writes
    assert wait_for(done, 10), (writes, audit_rows(env, t.id))
    entries = listing(env, t.admin, limit=200)
    return list(reversed(entries))


def quiet_record(env, t, n=None, payload=None, key=None, **extra):
    """POST /v1/records with status synced (no sync job, so no later
    event): the new record.  3 entries: request, record.created, record.synced."""
    fields = {"title": "t%s" % (n if n is not None else ""), "type": "inspection", "status": "synced",
              "payload": payload or {}}
    fields.update(extra)
    return env.create_record(key or t.admin, fields).body


def key_of(env, t):
    r = env.api("GET", "/v1/audit/key", key=t.admin)
    assert r.status == 200, r
    return r.body


def verify(env, t, key=None):
    r = env.api("GET", "/v1/audit/verify", key=key or t.admin)
    assert r.status == 200, r
    assert set(r.body) == {"valid", "entries", "redacted", "checkpoints", "first_bad", "message", "key_id"}, r.body
    return r.body


def ctl_verify(env, tenant):
    rc, out, err = env.ctl_raw("audit", "verify", tenant)
    return rc, json.loads(out) if out.strip().startswith("{") else out, err


def error_code(reply):
    return reply.error_code()


def new_bundle(env, t, expect=201, **body):
    body.setdefault("from", rfc3339(-600))
    body.setdefault("to", rfc3339(600))
    r = env.api("POST", "/v1/evidence/bundles", body, key=t.admin)
    assert r.status == expect, r
    return r.body


def download(env, t, bundle_id, key=None):
    status, hdrs, data = env.d.request("GET", "/v1/evidence/bundles/" + bundle_id,
                                       headers={"X-API-Key": key or t.admin})
    assert status == 200, (status, data[:300])
    assert hdrs["content-type"] == "application/gzip", hdrs
    return data


def store_bundle_bytes(env, bundle_id, data):
    """Overwrites a stored bundle's bytes in the database."""
    hexed = data.hex()
    value = "X'%s'" % hexed if env.storage.engine == "sqlite" else "decode('%s', 'hex')" % hexed
    execute(env, "UPDATE audit_bundles SET data = %s WHERE id = %s" % (value, sql_quote(bundle_id)))


# ================================================================ what is recorded

def test_events_become_entries_with_their_fields(env):
    t = env.new_tenant()
    rec = quiet_record(env, t, payload={"site": "Nord", "n": 1})
    upd = env.patch_record(t.admin, rec["id"], {"title": "second", "status": "synced"}, causal=rec["causal"]).body
    env.patch_record(t.admin, rec["id"], {"title": "stale"}, causal=rec["causal"], expect=409)
    env.delete_record(t.admin, rec["id"], causal=upd["causal"])
    env.post_policy(t.admin, "media", "size > 10", "queue=wifi", expect=201)
    entries = settle(env, t, writes=5)
    events = env.event_rows(t.id)
    by_event = {e["event_id"]: e for e in entries if e["kind"] == "event"}
    assert set(by_event) == {ev["id"] for ev in events}, "one entry per event, no more"
    types = [ev["type"] for ev in events]
    for want in ("tenant.created", "record.created", "record.updated", "record.conflict", "record.deleted",
                 "policy.created"):
        assert want in types, types
    for ev in events:
        e = by_event[ev["id"]]
        pl = ev["payload"]
        assert e["type"] == ev["type"] and e["tenant"] == t.id
        assert e["data"] == pl, (e, pl)
        assert e["target"] == pl.get("id")
        assert e["actor"] == (pl.get("actor") or pl.get("updated_by") or pl.get("created_by")), (e, pl)
        assert round(parse_time(e["event_time"]) * 1000) == ev["created_ms"], (e["event_time"], ev["created_ms"])
        assert parse_time(e["time"]) >= parse_time(e["event_time"])
        assert set(e) == {"id", "tenant", "seq", "time", "kind", "type", "actor", "target", "event_id",
                          "event_time", "data", "hash", "prev_hash"}, sorted(e)
    created = [e for e in entries if e["type"] == "record.created"][0]
    assert created["actor"] == kid(t.admin) and created["target"] == rec["id"]
    # the stored columns are copies of the body
    rows = {r["id"]: r for r in audit_rows(env, t.id)}
    for e in entries:
        r = rows[e["id"]]
        assert (r["seq"], r["kind"], r["type"], r["actor"], r["target"]) == \
            (e["seq"], e["kind"], e["type"], e["actor"], e["target"])
        assert r["event_id"] == e.get("event_id")
        assert r["body"] == canonical(e)
        assert r["policy"] == ("media" if e["type"] == "policy.created" else None)


def test_writes_become_entries_refused_ones_too_reads_and_strangers_do_not(env):
    t = env.new_tenant()
    viewer = t.viewer
    ok = env.api("POST", "/v1/records", {"title": "a", "type": "x", "status": "synced"}, key=t.admin,
                 headers={"X-Request-Id": "audit-ok-1"})
    assert ok.status == 201 and ok.headers["x-request-id"] == "audit-ok-1", ok
    rid = ok.body["id"]
    bad = env.api("POST", "/v1/records", {"title": "", "type": "x"}, key=t.admin)
    assert bad.status == 422, bad
    refused = env.api("POST", "/v1/records", {"title": "v", "type": "x"}, key=viewer)
    assert refused.status == 403, refused
    patched = env.api("PATCH", "/v1/records/" + rid, {"title": "b", "causal": ok.body["causal"],
                                                      "status": "synced"}, key=t.operator)
    assert patched.status == 200, patched
    # not recorded: reads, and requests without a principal
    for key in (t.admin, viewer):
        assert env.api("GET", "/v1/records/" + rid, key=key, headers={"X-Request-Id": "audit-read"}).status == 200
    assert env.api("GET", "/v1/audit", key=t.admin, headers={"X-Request-Id": "audit-read"}).status == 200
    assert env.api("POST", "/v1/records", {"title": "n", "type": "x"},
                   headers={"X-Request-Id": "audit-anon"}).status == 401
    assert env.api("POST", "/v1/records", {"title": "n", "type": "x"}, key="rs_live_nope.nope",
                   headers={"X-Request-Id": "audit-anon"}).status == 401
    entries = settle(env, t, writes=4)
    reqs = [e for e in entries if e["kind"] == "request"]
    assert not [e for e in reqs if e["request_id"] in ("audit-read", "audit-anon")]
    by_id = {e["request_id"]: e for e in reqs}
    want = [(ok, "POST", "/v1/records", "/v1/records", "/v1/records", t.admin, "admin", "success"),
            (bad, "POST", "/v1/records", "/v1/records", "/v1/records", t.admin, "admin", "failure"),
            (refused, "POST", "/v1/records", "/v1/records", "/v1/records", viewer, "viewer", "failure"),
            (patched, "PATCH", "/v1/records/:id", "/v1/records/" + rid, rid, t.operator, "operator", "success")]
    assert len(reqs) == 4
    for reply, method, route, path, target, key, role, result in want:
        e = by_id[reply.headers["x-request-id"]]
        assert set(e) == {"id", "tenant", "seq", "time", "kind", "type", "actor", "target", "actor_kind", "role",
                          "credential", "method", "route", "path", "status", "result", "request_id",
                          "request_time", "hash", "prev_hash"}, sorted(e)
        assert (e["type"], e["method"], e["route"], e["path"], e["target"]) == ("request", method, route, path,
                                                                              target), e
        assert (e["status"], e["result"], e["role"]) == (reply.status, result, role), e
        assert e["actor"] == kid(key) and e["credential"] == kid(key) and e["actor_kind"] == "api_key", e
        assert parse_time(e["request_time"]) <= parse_time(e["time"]) + 0.001
        assert e["tenant"] == t.id


def test_retry_route_target_is_the_job(env):
    t = env.new_tenant()
    r = env.api("POST", "/v1/sync/retry/job_NOPE", key=t.admin)
    assert r.status == 404, r
    entries = settle(env, t, writes=1)
    e = [e for e in entries if e["kind"] == "request"][0]
    assert (e["route"], e["target"], e["status"], e["result"]) == ("/v1/sync/retry/:job", "job_NOPE", 404,
                                                                   "failure"), e


# ================================================================ the chain, checked here

def test_hash_chain_checks_out_independently(env):
    t = env.new_tenant()
    quiet_record(env, t, payload={"note": "Zürich — 東京 😀", "path": "a/b</script>", "nested": {"z": [1, 2, {"b": None}],
                                                                                           "a": True},
                                  "big": 9007199254740993, "neg": -3, "q": "\"quoted\" \\ back"})
    for i in range(3):
        quiet_record(env, t, i)
    entries = settle(env, t, writes=4)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    last = check_chain(entries)
    assert head(env, t.id)["seq"] == len(entries) and head(env, t.id)["hash"] == last
    for e in entries:
        assert re.match(AUD_ID, e["id"]) and e["tenant"] == t.id and e["kind"] in ("event", "request")
    # stored rows: body is the canonical text, prev/hash columns as shown
    for r, e in zip(audit_rows(env, t.id), entries):
        assert (r["body"], r["prev_hash"], r["hash"]) == (canonical(e), e["prev_hash"], e["hash"])
        assert r["time_ms"] == round(parse_time(e["time"]) * 1000)
    v = verify(env, t)
    assert v["valid"] is True and v["entries"] == len(entries) and v["first_bad"] is None, v
    assert v["checkpoints"] == len(entries) // CHECKPOINT_EVERY, v


CANONICAL = pytest.mark.xfail(strict=True, reason=(
    "DESIGN: the canonical body is jansson's text, which no standard serializer reproduces for reals (17 "
    "significant digits: 0.1 is stored as 0.10000000000000001, 1e100 as 1.0000000000000000e+100) nor for control "
    "characters (escaped with upper-case hex, \\u001F, where Python and JCS write \\u001f); a verifier that "
    "re-serializes the entry JSON gets another SHA-256, so such entries cannot be checked from the API's JSON alone"))


@pytest.mark.parametrize("value", [pytest.param(0.1, marks=CANONICAL), pytest.param(1e100, marks=CANONICAL),
                                   pytest.param("\u001fctl", marks=CANONICAL), "\u0001ctl",
                                   "\u2028sep\u007f", 1.5, -0.25, 12345678901])
def test_canonical_body_matches_a_standard_serializer(env, value):
    """The canonical body (jansson, compact, sorted keys) must be what a
    verifier with only the entry JSON can reproduce."""
    t = env.new_tenant()
    quiet_record(env, t, payload={"v": value})
    entries = settle(env, t, writes=1)
    check_chain(entries)


def test_checkpoints_are_signed_and_verify_with_the_public_key(env):
    t = env.new_tenant()
    for i in range(4):
        quiet_record(env, t, i)
    entries = settle(env, t, writes=4)
    key = key_of(env, t)
    assert set(key) == {"algorithm", "key_id", "public_key"} and key["algorithm"] == "ed25519"
    assert key["key_id"] == key_id_of(key["public_key"])
    cps = audit_rows(env, t.id, "audit_checkpoints")
    assert [c["seq"] for c in cps] == list(range(CHECKPOINT_EVERY, len(entries) + 1, CHECKPOINT_EVERY))
    by_seq = {e["seq"]: e for e in entries}
    for c in cps:
        assert c["hash"] == by_seq[c["seq"]]["hash"] and c["key_id"] == key["key_id"]
        stmt = checkpoint_statement(t.id, c["seq"], c["hash"], c["time_ms"])
        assert signature_ok(key["public_key"], stmt, c["signature"]), c
        assert not signature_ok(key["public_key"], checkpoint_statement(t.id, c["seq"], c["hash"], c["time_ms"] + 1),
                                c["signature"])
        assert not signature_ok(key["public_key"], checkpoint_statement("ten_other", c["seq"], c["hash"],
                                                                        c["time_ms"]), c["signature"])
    assert head(env, t.id)["checkpoint_seq"] == cps[-1]["seq"]


def test_timed_checkpoint_signs_a_head_that_moved(rs_daemon):
    env = rs_daemon(audit_sections(checkpoint_every="1000", checkpoint_interval="200ms"))
    t = env.new_tenant()
    quiet_record(env, t, 0)
    entries = settle(env, t, writes=1)
    assert wait_for(lambda: head(env, t.id)["checkpoint_seq"] == entries[-1]["seq"], 5), head(env, t.id)
    # the tenant's first entries may be appended a tick before the record's,
    # so a checkpoint may also sit at an earlier head: the last is this one
    cps = audit_rows(env, t.id, "audit_checkpoints")
    assert cps[-1]["seq"] == entries[-1]["seq"] and cps[-1]["hash"] == entries[-1]["hash"], cps
    assert all(c["seq"] <= entries[-1]["seq"] for c in cps)
    assert signature_ok(key_of(env, t)["public_key"],
                        checkpoint_statement(t.id, cps[-1]["seq"], cps[-1]["hash"], cps[-1]["time_ms"]),
                        cps[-1]["signature"])
    time.sleep(0.5)  # the head did not move: no further checkpoint
    assert len(audit_rows(env, t.id, "audit_checkpoints")) == len(cps)
    quiet_record(env, t, 1)
    entries = settle(env, t, writes=2)
    assert wait_for(lambda: head(env, t.id)["checkpoint_seq"] == entries[-1]["seq"], 5), head(env, t.id)
    cps = audit_rows(env, t.id, "audit_checkpoints")
    assert len(cps) >= 2 and cps[-1]["seq"] == entries[-1]["seq"], cps  # (the new entries may come in two flushes)
    assert verify(env, t)["checkpoints"] == len(cps)


def test_receipt_of_an_entry_is_signed(env):
    t = env.new_tenant()
    for i in range(3):
        quiet_record(env, t, i)
    entries = settle(env, t, writes=3)
    key = key_of(env, t)
    cps = audit_rows(env, t.id, "audit_checkpoints")
    for e in (entries[0], entries[CHECKPOINT_EVERY - 1], entries[-1]):
        r = env.api("GET", "/v1/audit/events/" + e["id"], key=t.admin)
        assert r.status == 200, r
        assert r.body["event"] == e
        rc = r.body["receipt"]
        assert set(rc) == {"entry_id", "seq", "hash", "prev_hash", "body", "body_sha256", "algorithm", "key_id",
                           "public_key", "statement", "signature", "checkpoint"}, rc
        assert sha256_hex(rc["body"]) == rc["body_sha256"] and json.loads(rc["body"]) == {
            k: v for k, v in e.items() if k not in ("hash", "prev_hash")}
        assert (rc["entry_id"], rc["seq"], rc["hash"], rc["prev_hash"]) == (e["id"], e["seq"], e["hash"],
                                                                            e["prev_hash"])
        assert rc["body_sha256"] == sha256_hex(canonical(e))
        assert entry_hash(rc["prev_hash"], canonical(e)) == rc["hash"]
        assert (rc["algorithm"], rc["key_id"], rc["public_key"]) == ("ed25519", key["key_id"], key["public_key"])
        assert rc["statement"] == receipt_statement(t.id, e["seq"], e["hash"])
        assert signature_ok(key["public_key"], rc["statement"], rc["signature"])
        later = [c for c in cps if c["seq"] >= e["seq"]]
        if later:
            c = rc["checkpoint"]
            assert (c["seq"], c["hash"], c["time_ms"], c["key_id"]) == (later[0]["seq"], later[0]["hash"],
                                                                         later[0]["time_ms"], key["key_id"]), c
            assert signature_ok(key["public_key"], checkpoint_statement(t.id, c["seq"], c["hash"], c["time_ms"]),
                                c["signature"])
        else:
            assert rc["checkpoint"] is None
    r = env.api("GET", "/v1/audit/events/" + crockford_id("aud_"), key=t.admin)
    assert r.status == 404 and error_code(r) == "audit.not_found", r


def test_verify_route_and_relayctl_agree_on_a_good_chain(env):
    t = env.new_tenant()
    for i in range(2):
        quiet_record(env, t, i)
    entries = settle(env, t, writes=2)
    v = verify(env, t)
    assert v["valid"] is True and v["entries"] == len(entries) and v["redacted"] == 0, v
    assert v["key_id"] == key_of(env, t)["key_id"]
    rc, out, err = ctl_verify(env, t.id)
    assert rc == 0, (out, err)
    assert out == v
    rc, out, err = env.ctl_raw("audit", "key")
    assert rc == 0 and json.loads(out) == key_of(env, t), (out, err)
    rc, out, err = env.ctl_raw("audit", "verify")
    assert rc == 2 and "usage" in out + err
    # an empty tenant's chain is valid and empty
    empty = crockford_id("ten_")
    rc, out, err = ctl_verify(env, empty)
    assert rc == 0 and out["valid"] is True and out["entries"] == 0, out


def test_relayctl_never_makes_a_second_key(env, tmp_path):
    """relayctl run against another data_dir (wrong user, wrong folder)
    must not mint a key of its own: it fails and leaves no file."""
    other = tmp_path / "elsewhere"
    other.mkdir()
    rc, out, err = env.ctl_raw("audit", "key", overrides=("server.data_dir=%s" % other,))
    assert rc == 1 and "no signing key" in out + err, (rc, out, err)
    assert not (other / "audit-signing.key").exists()


def test_two_daemons_on_one_database_extend_one_chain(engine, rs_daemon, tmp_path):
    """Daemons sharing a PostgreSQL database (and the signing key file, as
    documented) append to one chain per tenant: each event once, no fork,
    and it verifies, while both write at the same time."""
    if engine != "pgsql":
        pytest.skip("several daemons share a database on PostgreSQL")
    key_file = str(tmp_path / "shared-audit.key")
    one = rs_daemon(audit_sections(signing_key_file=key_file))
    two = rs_daemon(audit_sections(signing_key_file=key_file))
    t = one.new_tenant()
    threads = [threading.Thread(target=lambda env=env, k=k: [quiet_record(env, t, "%d-%d" % (k, i)) for i in range(15)])
               for k, env in enumerate((one, two, one, two))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    entries = settle(one, t, writes=60)
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    event_ids = [e["event_id"] for e in entries if e["kind"] == "event"]
    assert len(event_ids) == len(set(event_ids))
    for env in (one, two):
        v = verify(env, t)
        assert v["valid"] is True and v["entries"] == len(entries), v


# ================================================================ tampering in the database

def tampered_tenant(env, records=4):
    """A tenant of its own with a settled chain of 3*records+1 entries
    (13: checkpoints at 5 and 10, none at the head)."""
    t = env.new_tenant()
    for i in range(records):
        quiet_record(env, t, i)
    entries = settle(env, t, writes=records)
    assert verify(env, t)["valid"] is True
    return t, entries


def assert_caught(env, t, seq, entry_id=None, words=None):
    v = verify(env, t)
    assert v["valid"] is False, v
    assert v["first_bad"] and v["first_bad"]["seq"] == seq, v
    if entry_id:
        assert v["first_bad"]["id"] == entry_id, v
    assert ("entry %d " % seq) in v["message"], v
    if words:
        assert words in v["message"], v
    rc, out, err = ctl_verify(env, t.id)
    assert rc == 1, (out, err)
    assert out["valid"] is False and out["first_bad"] == v["first_bad"], out
    return v


def test_tampered_body_is_caught(env):
    t, entries = tampered_tenant(env)
    e = entries[2]
    body = canonical(e).replace('"tenant":"%s"' % t.id, '"tenant":"%s"' % t.id, 1)
    body = body.replace('"seq":%d' % e["seq"], '"seq":%d,"x":1' % e["seq"], 1)
    assert body != canonical(e)
    set_columns(env, t.id, e["seq"], body=body)
    assert_caught(env, t, e["seq"], e["id"], "hash does not match")
    # another tenant's chain is not affected
    other, _ = tampered_tenant(env, 1)
    assert verify(env, other)["valid"] is True


def test_tampered_column_alone_is_caught(env):
    t, entries = tampered_tenant(env)
    e = [e for e in entries if e["actor"]][1]
    set_columns(env, t.id, e["seq"], actor="mallory")
    assert_caught(env, t, e["seq"], e["id"], "columns differ")


def test_deleted_middle_row_is_caught(env):
    t, entries = tampered_tenant(env)
    gone = entries[3]
    execute(env, "DELETE FROM audit_entries WHERE tenant = %s AND seq = %d" % (sql_quote(t.id), gone["seq"]))
    v = assert_caught(env, t, gone["seq"], words="missing")
    # the missing entry's id is not known: not the id of the entry after it
    assert v["first_bad"] == {"seq": gone["seq"], "id": None}, v


def test_deleted_last_row_is_caught_by_the_head(env):
    t, entries = tampered_tenant(env)
    assert len(entries) % CHECKPOINT_EVERY != 0
    last = entries[-1]
    execute(env, "DELETE FROM audit_entries WHERE tenant = %s AND seq = %d" % (sql_quote(t.id), last["seq"]))
    v = assert_caught(env, t, last["seq"], words="head")
    assert v["first_bad"] == {"seq": last["seq"], "id": None}, v


def test_consistent_rewrite_behind_a_checkpoint_is_caught(env):
    t, entries = tampered_tenant(env)
    victim = [e for e in entries if e["seq"] < CHECKPOINT_EVERY and e["actor"]][0]

    def edit(body):
        body["actor"] = "someone-else"
    rewrite_chain(env, t.id, victim["seq"], edit)
    # the forgery is internally consistent: only the signature can tell
    rows = audit_rows(env, t.id)
    prev = ZERO_HASH
    for r in rows:
        assert r["prev_hash"] == prev and r["hash"] == entry_hash(prev, r["body"])
        prev = r["hash"]
    assert head(env, t.id)["hash"] == prev
    assert_caught(env, t, CHECKPOINT_EVERY, entries[CHECKPOINT_EVERY - 1]["id"], "checkpoint")


def test_forged_checkpoint_signature_is_caught(env):
    t, entries = tampered_tenant(env)
    sig = base64.b64encode(bytes(64)).decode()
    execute(env, "UPDATE audit_checkpoints SET signature = %s WHERE tenant = %s" % (sql_quote(sig), sql_quote(t.id)))
    v = verify(env, t)
    assert v["valid"] is False and "signature" in v["message"], v
    assert ctl_verify(env, t.id)[0] == 1


# ================================================================ evidence bundles

def check_bundle_here(files, key, tenant, entries):
    """The bundle's files checked with Python alone."""
    assert set(files) == {"manifest.json", "manifest.sig", "entries.jsonl", "checkpoints.json"}, set(files)
    assert signature_ok(key["public_key"], files["manifest.json"], files["manifest.sig"].decode().strip())
    m = json.loads(files["manifest.json"])
    assert m["tenant"] == tenant and m["format"] == "relay-evidence-bundle/1"
    assert m["public_key"] == {"algorithm": "ed25519", "key_id": key["key_id"], "public_key": key["public_key"]}
    assert m["entries"]["sha256"] == sha256_hex(files["entries.jsonl"])
    assert m["checkpoints"]["sha256"] == sha256_hex(files["checkpoints.json"])
    lines = entry_lines(files)
    assert len(lines) == m["entries"]["count"] == len(entries)
    prev = m["entries"]["anchor_prev_hash"]
    for line, e in zip(lines, entries):
        assert (line["seq"], line["id"], line["hash"], line["prev_hash"]) == (e["seq"], e["id"], e["hash"], prev)
        if line.get("redacted"):
            assert "body" not in line
        else:
            assert line["body"] == canonical(e)
            assert line["body_sha256"] == sha256_hex(line["body"])
        assert line["hash"] == sha256_hex("relay-audit-v1\n%s\n%s" % (prev, line["body_sha256"]))
        prev = line["hash"]
    cps = json.loads(files["checkpoints.json"])
    assert cps and cps[-1]["seq"] == lines[-1]["seq"] and cps[-1]["hash"] == lines[-1]["hash"]
    for c in cps:
        assert signature_ok(key["public_key"], checkpoint_statement(tenant, c["seq"], c["hash"], c["time_ms"]),
                            c["signature"])
    return m


def test_bundle_round_trip(env, tmp_path):
    t = env.new_tenant()
    for i in range(3):
        quiet_record(env, t, i)
    entries = settle(env, t, writes=3)
    key = key_of(env, t)
    frm, to = rfc3339(-600), rfc3339(600)
    b = new_bundle(env, t, **{"from": frm, "to": to})
    assert set(b) == {"id", "status", "from", "to", "components", "entries", "first_seq", "last_seq", "sha256",
                      "size", "created_at", "download_url", "verify_url"}, b
    assert re.match(EVB_ID, b["id"]) and b["status"] == "ready" and b["components"] is None
    assert (b["entries"], b["first_seq"], b["last_seq"]) == (len(entries), 1, len(entries)), b
    assert abs(parse_time(b["from"]) - parse_time(frm)) < 0.002 and abs(parse_time(b["to"]) - parse_time(to)) < 0.002
    assert b["download_url"] == "/v1/evidence/bundles/" + b["id"] and b["verify_url"] == b["download_url"] + "/verify"
    data = download(env, t, b["id"])
    assert len(data) == b["size"] and sha256_hex(data) == b["sha256"]
    check_bundle_here(bundle_files(data), key, t.id, entries)
    rc, out, err = verify_offline(tmp_path, data, key["public_key"])
    assert rc == 0 and out.startswith("OK: ") and "%d entries" % len(entries) in out, (rc, out, err)
    keyfile = tmp_path / "key.txt"
    keyfile.write_text(key["public_key"] + "\n")
    rc, out, _ = run_verifier(["--public-key-file", str(keyfile), str(tmp_path / "bundle.tar.gz")])
    assert rc == 0 and out.startswith("OK: "), out
    r = env.api("GET", b["verify_url"], key=t.admin)
    assert r.status == 200, r
    v = r.body
    assert v["valid"] is True and v["sha256_matches_record"] is True and v["bundle_id"] == b["id"], v
    assert v["sha256"] == b["sha256"] and v["entries"] == len(entries) and v["first_bad"] is None, v
    lst = env.api("GET", "/v1/evidence/bundles", key=t.admin)
    assert lst.status == 200 and lst.body == {"bundles": [b]}, lst
    # the row in the database
    row = table_rows(env.storage, "audit_bundles", "id = " + sql_quote(b["id"]))[0]
    assert (row["tenant"], row["entries"], row["sha256"], row["size"]) == (t.id, len(entries), b["sha256"], len(data))
    # the POST itself is a write on the record
    settle(env, t, writes=4)


def test_bundle_of_an_empty_range(env, tmp_path):
    t = env.new_tenant()
    settle(env, t, writes=0)
    b = new_bundle(env, t, **{"from": "2020-01-01T00:00:00Z", "to": "2020-01-02T00:00:00Z"})
    assert (b["entries"], b["first_seq"], b["last_seq"]) == (0, 0, 0), b
    rc, out, _ = verify_offline(tmp_path, download(env, t, b["id"]), key_of(env, t)["public_key"])
    assert rc == 0 and out.startswith("OK: 0 entries"), out


def test_redacted_components_still_verify(env, tmp_path):
    t = env.new_tenant()
    for i in range(2):
        quiet_record(env, t, i)
    env.post_policy(t.admin, "media", "size > 10", "queue=wifi", expect=201)
    writes = 3
    key = key_of(env, t)
    for components, keep in ((["requests"], lambda e: e["kind"] == "request"),
                             (["record"], lambda e: e["type"].startswith("record.")),
                             (["events"], lambda e: e["kind"] == "event"),
                             (["policy", "requests"], lambda e: e["type"].startswith("policy.") or
                              e["kind"] == "request")):
        entries = settle(env, t, writes=writes)  # each bundle's POST is on the record of the next
        b = new_bundle(env, t, components=components)
        writes += 1
        assert b["components"] == components and b["entries"] == len(entries), b
        files = bundle_files(download(env, t, b["id"]))
        check_bundle_here(files, key, t.id, entries)
        lines = entry_lines(files)
        for line, e in zip(lines, entries):
            assert ("body" in line) == keep(e) and bool(line.get("redacted")) == (not keep(e)), (components, line)
        hidden = sum(1 for e in entries if not keep(e))
        assert 0 < hidden < len(entries)
        rc, out, _ = verify_offline(tmp_path, download(env, t, b["id"]), key["public_key"])
        assert rc == 0 and "%d redacted" % hidden in out, out
        v = env.api("GET", b["verify_url"], key=t.admin).body
        assert v["valid"] is True and v["redacted"] == hidden, v


@pytest.fixture
def bundle_case(env, tmp_path):
    t = env.new_tenant()
    for i in range(3):
        quiet_record(env, t, i)
    entries = settle(env, t, writes=3)
    b = new_bundle(env, t)
    return t, entries, b, bundle_files(download(env, t, b["id"])), key_of(env, t)


def edit_body(files, entries):
    lines = entry_lines(files)
    lines[4]["body"] = lines[4]["body"].replace('"kind":', '"forged":true,"kind":')
    return with_lines(files, lines), 5, entries[4]["id"]


def edit_hash(files, entries):
    lines = entry_lines(files)
    lines[6]["hash"] = "f" * 64
    return with_lines(files, lines), 7, entries[6]["id"]


def edit_hash_and_body_consistently(files, entries):
    """The body, its digest and its hash all rewritten: the next line's
    prev_hash still names the old hash."""
    lines = entry_lines(files)
    body = lines[2]["body"].replace('"kind":', '"forged":true,"kind":')
    lines[2]["body"], lines[2]["body_sha256"] = body, sha256_hex(body)
    lines[2]["hash"] = entry_hash(lines[2]["prev_hash"], body)
    return with_lines(files, lines), 4, entries[3]["id"]


def drop_line(files, entries):
    lines = entry_lines(files)
    del lines[5]
    return with_lines(files, lines), 6, None


def redact_a_line(files, entries):
    """An entry hidden after the fact: the chain still holds (the digest
    stays) but entries.jsonl no longer matches the signed manifest."""
    lines = entry_lines(files)
    del lines[1]["body"]
    lines[1]["redacted"] = True
    return with_lines(files, lines), None, None


@pytest.mark.parametrize("tamper", [edit_body, edit_hash, edit_hash_and_body_consistently, drop_line,
                                    redact_a_line])
def test_tampered_bundle_fails_offline_naming_the_entry(env, tmp_path, bundle_case, tamper):
    t, entries, b, files, key = bundle_case
    rc, out, _ = verify_offline(tmp_path, make_bundle(files), key["public_key"], "repacked.tar.gz")
    assert rc == 0, "the repacked, untouched bundle verifies: %s" % out
    forged, seq, entry_id = tamper(files, entries)
    rc, out, err = verify_offline(tmp_path, make_bundle(forged), key["public_key"], "forged.tar.gz")
    assert rc == 1 and out.startswith("FAIL: "), (rc, out, err)
    if seq is not None:
        assert out.startswith("FAIL: entry %d " % seq), out
        if entry_id:
            assert "(%s)" % entry_id in out, out
        else:
            assert out.startswith("FAIL: entry %d (?): " % seq), "a dropped entry is not named by the next one's id"
    else:
        assert "entries.jsonl" in out, out


def test_bundle_with_swapped_manifest_or_wrong_key_fails(env, tmp_path, bundle_case):
    t, entries, b, files, key = bundle_case
    quiet_record(env, t, "more")
    settle(env, t, writes=5)
    other = bundle_files(download(env, t, new_bundle(env, t)["id"]))
    # the other bundle's manifest alone: its signature does not match
    rc, out, _ = verify_offline(tmp_path, make_bundle(dict(files, **{"manifest.json": other["manifest.json"]})),
                                key["public_key"])
    assert rc == 1 and "manifest.sig" in out, out
    # its manifest and signature together: genuine, but for other entries
    swapped = dict(files, **{"manifest.json": other["manifest.json"], "manifest.sig": other["manifest.sig"]})
    rc, out, _ = verify_offline(tmp_path, make_bundle(swapped), key["public_key"])
    assert rc == 1 and out.startswith("FAIL: "), out
    # another key
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    wrong = base64.b64encode(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    rc, out, _ = verify_offline(tmp_path, make_bundle(files), wrong)
    assert rc == 1 and out.startswith("FAIL: ") and "manifest.sig" in out, out
    # a file missing, not a bundle at all
    rc, out, _ = verify_offline(tmp_path, make_bundle({k: v for k, v in files.items() if k != "checkpoints.json"}),
                                key["public_key"])
    assert rc == 1 and out.startswith("FAIL: "), out
    rc, out, _ = verify_offline(tmp_path, b"not a tarball", key["public_key"])
    assert rc == 1 and out.startswith("FAIL: "), out


def test_offline_verifier_usage(tmp_path):
    path = tmp_path / "b.tar.gz"
    path.write_bytes(b"x")
    for args in ([], [str(path)], ["--public-key", "AAAA", str(path)], ["--public-key"],
                 ["--public-key", base64.b64encode(bytes(32)).decode(), str(path), "extra"], ["--bogus", str(path)],
                 ["--public-key", base64.b64encode(bytes(32)).decode(), str(tmp_path / "missing.tar.gz")]):
        rc, out, err = run_verifier(args)
        assert rc == 2, (args, rc, out, err)
    rc, out, _ = run_verifier(["--help"])
    assert rc == 0 and "usage" in out


def test_bundle_altered_in_the_database_fails_server_side(env, bundle_case):
    t, entries, b, files, key = bundle_case
    forged, seq, entry_id = edit_body(files, entries)
    store_bundle_bytes(env, b["id"], make_bundle(forged))
    r = env.api("GET", b["verify_url"], key=t.admin)
    assert r.status == 200, r
    v = r.body
    assert v["valid"] is False and v["sha256_matches_record"] is False, v
    assert v["first_bad"] == {"seq": seq, "id": entry_id}, v
    # a re-signed sha256 column does not help: the chain itself is bad
    execute(env, "UPDATE audit_bundles SET sha256 = %s WHERE id = %s" % (
        sql_quote(sha256_hex(make_bundle(forged))), sql_quote(b["id"])))
    v = env.api("GET", b["verify_url"], key=t.admin).body
    assert v["valid"] is False and v["first_bad"]["seq"] == seq, v


def test_bundle_request_validation(env):
    t = env.new_tenant()
    now = rfc3339()
    cases = [{}, {"from": now}, {"to": now}, {"from": "yesterday", "to": now}, {"from": now, "to": 5},
             {"from": rfc3339(10), "to": rfc3339(-10)}, {"from": now, "to": now, "components": []},
             {"from": now, "to": now, "components": ["Bad!"]}, {"from": now, "to": now, "components": "requests"},
             {"from": now, "to": now, "components": [""]}, {"from": now, "to": now, "components": ["x"] * 33},
             {"from": now, "to": now, "extra": 1}]
    for body in cases:
        r = env.api("POST", "/v1/evidence/bundles", body, key=t.admin)
        assert r.status == 422 and error_code(r) == "validation_failed", (body, r)
        assert r.body["error"]["details"], r
    r = env.api("POST", "/v1/evidence/bundles", raw=b"{nope", key=t.admin)
    assert r.status == 400 and error_code(r) == "invalid_json", r
    assert table_count(env.storage, "audit_bundles", "tenant = " + sql_quote(t.id)) == 0
    for q in ("?limit=0", "?limit=201", "?limit=x"):
        r = env.api("GET", "/v1/evidence/bundles" + q, key=t.admin)
        assert r.status == 400 and error_code(r) == "invalid_limit", r
    r = env.api("GET", "/v1/evidence/bundles/evb_NOPE", key=t.admin)
    assert r.status == 404 and error_code(r) == "evidence.not_found", r
    r = env.api("GET", "/v1/evidence/bundles/evb_NOPE/verify", key=t.admin)
    assert r.status == 404 and error_code(r) == "evidence.not_found", r


def test_bundle_range_too_large(env):
    t = env.new_tenant()

    def push(first, n):
        r = env.push(t.admin, [{"op": "create", "idempotency_key": "k%d" % i,
                                "record": {"title": "r%d" % i, "type": "x", "status": "synced"}}
                               for i in range(first, first + n)])
        assert all(x["outcome"] == "applied" for x in r.body["results"]), r.body

    # two pushes apart in time: a push's entries are appended within a
    # millisecond or two, so a cut between entries of one push is not a
    # cut in time; a cut between the pushes is
    n = BUNDLE_MAX // 2 + 1
    push(0, n // 3)
    before = settle(env, t, writes=1)
    time.sleep(0.05)
    cut = rfc3339(0)
    time.sleep(0.05)
    push(n // 3, n - n // 3)
    entries = settle(env, t, writes=2)
    assert len(entries) > BUNDLE_MAX
    r = env.api("POST", "/v1/evidence/bundles", {"from": rfc3339(-600), "to": rfc3339(600)}, key=t.admin)
    assert r.status == 422 and error_code(r) == "evidence.range_too_large", r
    assert str(BUNDLE_MAX) in r.body["error"]["message"]
    # a range that holds fewer is fine: exactly the first push's entries
    b = new_bundle(env, t, **{"from": rfc3339(-600), "to": cut})
    assert b["entries"] == len(before) <= BUNDLE_MAX and b["first_seq"] == 1, (b, len(before))
    assert table_count(env.storage, "audit_bundles", "tenant = " + sql_quote(t.id)) == 1


# ================================================================ the stream

def stream(env, key, path="/v1/audit/stream", headers=None, rcvbuf=None):
    h = {"X-API-Key": key}
    h.update(headers or {})
    c = SSEClient(env.d, path, h, rcvbuf=rcvbuf)
    assert c.wait(lambda c: c.status is not None), "no answer"
    return c


def open_stream(env, key, **kw):
    c = stream(env, key, **kw)
    assert c.status == 200 and c.headers["content-type"].startswith("text/event-stream"), (c.status, c.headers)
    assert c.wait(lambda c: "audit stream" in c.comments), c.comments
    return c


def test_stream_live_starts_at_the_present(env):
    t = env.new_tenant()
    quiet_record(env, t, 0)
    before = settle(env, t, writes=1)
    with open_stream(env, t.admin) as c:
        quiet_record(env, t, 1)
        after = settle(env, t, writes=2)
        assert c.wait_seq(after[-1]["seq"]), c.events()
        evs = c.events()
        assert [int(e["id"]) for e in evs] == [e["seq"] for e in after[len(before):]], evs
        assert all(e["event"] == "audit" for e in evs)
        assert [e["data"] for e in evs] == after[len(before):]
        check_chain([e["data"] for e in evs], before[-1]["hash"], before[-1]["seq"] + 1)


def test_stream_resumes_with_last_event_id_without_gaps_or_duplicates(env):
    t = env.new_tenant()
    for i in range(3):
        quiet_record(env, t, i)
    settled = settle(env, t, writes=3)
    resume_at = settled[4]["seq"]
    stop = threading.Event()
    made = []

    def writer():
        while not stop.is_set() and len(made) < 15:
            made.append(quiet_record(env, t, "w%d" % len(made)))
    th = threading.Thread(target=writer)
    th.start()
    try:
        time.sleep(0.05)
        c = open_stream(env, t.admin, headers={"Last-Event-ID": str(resume_at)})
    finally:
        th.join(30)
    with c:
        entries = settle(env, t, writes=3 + len(made))
        assert c.wait_seq(entries[-1]["seq"], 10), (len(c.events()), entries[-1]["seq"])
        c.read(0.3)  # nothing more should come
        ids = [int(e["id"]) for e in c.events()]
        assert ids == list(range(resume_at + 1, entries[-1]["seq"] + 1)), ids
        assert [e["data"] for e in c.events()] == entries[resume_at:]
        # then live
        quiet_record(env, t, "live")
        entries = settle(env, t, writes=4 + len(made))
        assert c.wait_seq(entries[-1]["seq"])
        ids = [int(e["id"]) for e in c.events()]
        assert ids == list(range(resume_at + 1, entries[-1]["seq"] + 1)), ids
    # ?last_event_id= and 0: from the start
    with open_stream(env, t.admin, path="/v1/audit/stream?last_event_id=0") as c2:
        assert c2.wait_seq(entries[-1]["seq"])
        assert [e["data"] for e in c2.events()] == entries
        check_chain([e["data"] for e in c2.events()])


def test_stream_type_filter_and_heartbeat(env):
    t = env.new_tenant()
    with open_stream(env, t.admin, path="/v1/audit/stream?type=record.*&last_event_id=0") as c:
        for i in range(2):
            quiet_record(env, t, i)
        env.post_policy(t.admin, "p", "size > 1", "queue=wifi", expect=201)
        entries = settle(env, t, writes=3)
        want = [e for e in entries if e["type"].startswith("record.")]
        assert c.wait(lambda c: len(c.events()) >= len(want)), c.events()
        assert c.wait(lambda c: "keep-alive" in c.comments, 3), c.comments
        assert [e["data"] for e in c.events()] == want
    with open_stream(env, t.admin, path="/v1/audit/stream?type=policy.created&last_event_id=0") as c:
        assert c.wait(lambda c: len(c.events()) >= 1)
        c.read(0.2)
        assert [e["data"]["type"] for e in c.events()] == ["policy.created"]


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "", " 3", "99999999999999999999"])
def test_stream_bad_last_event_id(env, bad):
    t = env.new_tenant()
    for how in ("header", "query"):
        if how == "header":
            if bad != bad.strip() or bad == "":
                continue  # a header value loses its blanks on the way
            c = stream(env, t.admin, headers={"Last-Event-ID": bad})
        else:
            c = stream(env, t.admin, path="/v1/audit/stream?last_event_id=" + urllib.parse.quote(bad))
        with c:
            assert c.status == 400, (how, bad, c.status)
            assert c.json_error()["error"]["code"] == "invalid_last_event_id"


def push_big_records(env, t, batches, per_batch=25, size=30000):
    """BATCHES pushes of PER_BATCH synced records with a SIZE-byte payload
    each (two entries of about SIZE bytes per record)."""
    for b in range(batches):
        r = env.push(t.admin, [{"op": "create", "idempotency_key": "big-%d-%d" % (b, i),
                                "record": {"title": "big", "type": "x", "status": "synced",
                                           "payload": {"blob": "x" * size}}} for i in range(per_batch)])
        assert all(x["outcome"] == "applied" for x in r.body["results"])


@pytest.mark.parametrize("bad", ["Record.created", "rec*", "record.*.x"])
def test_stream_bad_type_pattern(env, bad):
    t = env.new_tenant()
    with stream(env, t.admin, path="/v1/audit/stream?type=" + bad) as c:
        assert c.status == 400, (bad, c.status)
        assert c.json_error()["error"]["code"] == "invalid_type"


def test_stream_fills_gaps_when_its_worker_drops_messages(rs_daemon):
    """[limits] publish_backlog = 1: a burst of entries overflows the
    worker's inbox and messages are dropped; each stream fills the gap
    from the database, so it still gets every entry once and in order."""
    env = rs_daemon(audit_sections() | {"limits": {"publish_backlog": "1"}})
    t = env.new_tenant()
    quiet_record(env, t, 0)
    settle(env, t, writes=1)
    with open_stream(env, t.admin) as a, open_stream(env, t.admin) as b:
        r = env.push(t.admin, [{"op": "create", "idempotency_key": "gap-%d" % i,
                                "record": {"title": "g", "type": "x", "status": "synced"}} for i in range(40)])
        assert all(x["outcome"] == "applied" for x in r.body["results"])
        entries = settle(env, t, writes=2)
        for c in (a, b):
            assert c.wait_seq(entries[-1]["seq"], 10), (len(c.events()), entries[-1]["seq"])
            got = [int(e["id"]) for e in c.events()]
            assert got == list(range(got[0], entries[-1]["seq"] + 1)), got
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % env.d.port, timeout=10) as m:
        metrics = m.read().decode()
    dropped = re.search(r"^relay_publish_dropped_total (\d+)$", metrics, re.M)
    assert dropped and int(dropped.group(1)) > 0, "no message was dropped: the test proves nothing"


def test_slow_stream_consumer_is_cut_off_and_memory_stays_bounded(rs_daemon):
    """Two clients that never read (4 KiB receive buffers) while about
    9 MB of entries are appended: each is cut off once [limits]
    stream_buffer (64k) is unsent beyond what the kernel holds, the
    daemon's memory stays bounded, and a client that reads still gets
    every entry from the start."""
    from test_overload import rss_watch
    env = rs_daemon(audit_sections() | {"limits": {"stream_buffer": "64k", "sse_heartbeat": "200ms"}})
    t = env.new_tenant()
    stalled = [open_stream(env, t.admin, rcvbuf=4096) for _ in range(2)]
    try:
        with rss_watch(env.d, "2 audit streams that never read"):
            push_big_records(env, t, 6)
            log = wait_for(lambda: env.d.log.count("SSE client not reading") >= 2 and env.d.log, 10)
            assert log, [l for l in env.d.log.splitlines() if "[audit]" in l or "SSE" in l][-20:]
        assert log.count("SSE client not reading") == 2 and "stream_buffer is 65536" in log
        entries = settle(env, t, writes=6)
        for s in stalled:  # cut off: what the kernel held, then the end
            assert s.wait(lambda c: c.closed, 10)
            assert len(s.events()) < len(entries) - 1
        with open_stream(env, t.admin, path="/v1/audit/stream?last_event_id=%d" % (len(entries) - 40)) as c:
            assert c.wait_seq(entries[-1]["seq"], 10), (len(c.events()), c.closed)
            assert [int(e["id"]) for e in c.events()] == [e["seq"] for e in entries[-40:]]
    finally:
        for s in stalled:
            s.close()


def test_stream_gets_past_an_entry_larger_than_the_stream_buffer(rs_daemon):
    env = rs_daemon(audit_sections() | {"limits": {"stream_buffer": "16k"}})
    t = env.new_tenant()
    quiet_record(env, t, 0)
    before = settle(env, t, writes=1)
    quiet_record(env, t, 1, payload={"blob": "x" * 20000})
    quiet_record(env, t, 2)
    entries = settle(env, t, writes=3)
    for _ in range(3):  # a client that reads, resuming where it was cut off
        with open_stream(env, t.admin, headers={"Last-Event-ID": str(before[-1]["seq"])}) as c:
            c.wait(lambda c: c.closed or any(int(e["id"]) == entries[-1]["seq"] for e in c.events()), 3)
            got = [int(e["id"]) for e in c.events()]
            if got and got[-1] == entries[-1]["seq"]:
                break
    assert got == [e["seq"] for e in entries[len(before):]], (got, env.d.log.count("SSE client not reading"))


# ================================================================ filters and cursors

@pytest.fixture
def filtered(env):
    t = env.new_tenant()
    recs = [quiet_record(env, t, i) for i in range(3)]
    env.patch_record(t.operator, recs[0]["id"], {"title": "z", "status": "synced"}, causal=recs[0]["causal"])
    env.post_policy(t.admin, "media", "size > 10", "queue=wifi", expect=201)
    entries = settle(env, t, writes=5)
    return t, recs, entries


@pytest.mark.parametrize("path", ["/v1/audit", "/v1/audit/events"])
def test_filters(env, filtered, path):
    t, recs, entries = filtered
    newest = list(reversed(entries))

    def q(**params):
        return listing(env, t.admin, path, **params)
    assert q() == newest
    assert q(type="record.created") == [e for e in newest if e["type"] == "record.created"] and \
        len(q(type="record.created")) == 3
    assert q(type="record.*") == [e for e in newest if e["type"].startswith("record.")]
    assert q(type="*") == newest
    assert q(type="request") == [e for e in newest if e["type"] == "request"]
    assert q(kind="request") == [e for e in newest if e["kind"] == "request"] and len(q(kind="request")) == 5
    assert q(kind="event") == [e for e in newest if e["kind"] == "event"]
    op = kid(t.operator)
    assert q(actor=op) == [e for e in newest if e["actor"] == op] and len(q(actor=op)) == 2  # request, updated
    assert q(user=op) == q(actor=op)
    assert q(target=recs[0]["id"]) == [e for e in newest if e["target"] == recs[0]["id"]]
    assert len(q(target=recs[0]["id"])) == 4  # created, synced, updated and the PATCH request
    assert q(policy="media") == [e for e in newest if e["type"] == "policy.created"]
    assert q(model="nothing") == []
    assert q(type="record.created", actor=kid(t.admin)) == [e for e in newest if e["type"] == "record.created"]
    mid = entries[len(entries) // 2]
    t_mid = mid["time"]
    assert q(since=t_mid) == [e for e in newest if parse_time(e["time"]) >= parse_time(t_mid)]
    assert q(until=t_mid) == [e for e in newest if parse_time(e["time"]) <= parse_time(t_mid)]
    assert q(**{"from": t_mid}) == q(since=t_mid) and q(to=t_mid) == q(until=t_mid)
    assert mid in q(since=t_mid) and mid in q(until=t_mid)
    assert q(since="2999-01-01T00:00:00Z") == []


@pytest.mark.parametrize("path", ["/v1/audit", "/v1/audit/events"])
def test_pages_never_repeat_or_skip(env, filtered, path):
    t, recs, entries = filtered
    for limit in (1, 2, 7):
        got = listing(env, t.admin, path, limit=limit)
        assert [e["seq"] for e in got] == [e["seq"] for e in reversed(entries)]
    # new entries while paging: those there at the start come once each
    member = "events" if path.endswith("events") else "entries"
    first = env.api("GET", path + "?limit=3", key=t.admin).body
    seen = list(first[member])
    cursor = first["next_cursor"]
    while cursor:
        quiet_record(env, t, "during")
        body = env.api("GET", path + "?limit=3&cursor=" + cursor, key=t.admin).body
        seen.extend(body[member])
        cursor = body["next_cursor"]
    assert [e["seq"] for e in seen] == list(range(entries[-1]["seq"], 0, -1))
    r = env.api("GET", path + "?limit=200", key=t.admin)
    assert r.status == 200


@pytest.mark.parametrize("query,code", [
    ("type=Record.created", "invalid_type"), ("type=rec*", "invalid_type"), ("type=record.*.x", "invalid_type"),
    ("type=", "invalid_type"), ("kind=events", "invalid_kind"), ("kind=", "invalid_kind"),
    ("since=yesterday", "invalid_since"), ("from=2026-13-01T00:00:00Z", "invalid_since"),
    ("until=x", "invalid_until"), ("to=1", "invalid_until"), ("limit=0", "invalid_limit"),
    ("limit=201", "invalid_limit"), ("limit=x", "invalid_limit"), ("limit=-1", "invalid_limit"),
    ("cursor=garbage!", "invalid_cursor"), ("cursor=e30", "invalid_cursor")])
def test_bad_list_parameters(env, query, code):
    t = env.new_tenant()
    for path in ("/v1/audit", "/v1/audit/events"):
        r = env.api("GET", path + "?" + query, key=t.admin)
        assert r.status == 400 and error_code(r) == code, (path, query, r)


# ================================================================ tenants and roles

def test_tenants_never_see_each_other(env):
    a, b = env.new_tenant("A"), env.new_tenant("B")
    ra = quiet_record(env, a, "a")
    rb = quiet_record(env, b, "b")
    ea, eb = settle(env, a, writes=1), settle(env, b, writes=1)
    ba = new_bundle(env, a)
    bb = new_bundle(env, b)
    ea, eb = settle(env, a, writes=2), settle(env, b, writes=2)
    for t, mine, theirs, their_rec, their_bundle in ((a, ea, eb, rb, bb), (b, eb, ea, ra, ba)):
        for path in ("/v1/audit", "/v1/audit/events"):
            got = listing(env, t.admin, path)
            assert {e["tenant"] for e in got} == {t.id} and len(got) == len(mine)
            assert listing(env, t.admin, path, target=their_rec["id"]) == []
        for e in theirs[:3]:
            r = env.api("GET", "/v1/audit/events/" + e["id"], key=t.admin)
            assert r.status == 404 and error_code(r) == "audit.not_found", r
        v = verify(env, t)
        assert v["valid"] and v["entries"] == len(mine), v
        for url in ("/v1/evidence/bundles/" + their_bundle["id"], their_bundle["verify_url"]):
            r = env.api("GET", url, key=t.admin)
            assert r.status == 404 and error_code(r) == "evidence.not_found", r
        ids = [x["id"] for x in env.api("GET", "/v1/evidence/bundles", key=t.admin).body["bundles"]]
        assert ids == [(ba if t is a else bb)["id"]]
    # streams: A's stream, from the start, never carries B's entries
    with open_stream(env, a.admin, path="/v1/audit/stream?last_event_id=0") as c:
        quiet_record(env, b, "b2")
        quiet_record(env, a, "a2")
        ea = settle(env, a, writes=3)
        settle(env, b, writes=3)
        assert c.wait_seq(ea[-1]["seq"])
        c.read(0.2)
        assert [e["data"] for e in c.events()] == ea


def test_only_admins_read_the_audit_log(env):
    t = env.new_tenant()
    quiet_record(env, t, 0)
    entries = settle(env, t, writes=1)
    b = new_bundle(env, t)
    urls = ROUTES_GET + ["/v1/audit/events/" + entries[0]["id"], "/v1/evidence/bundles",
                         "/v1/evidence/bundles/" + b["id"], b["verify_url"]]
    for key, status in ((t.operator, 403), (t.viewer, 403), (None, 401), ("rs_live_bogus.bogus", 401)):
        for url in urls:
            r = env.api("GET", url, key=key)
            assert r.status == status, (url, key, r)
        r = env.api("POST", "/v1/evidence/bundles", {"from": rfc3339(-60), "to": rfc3339(60)}, key=key)
        assert r.status == status, r
        c = stream(env, key) if key else SSEClient(env.d, "/v1/audit/stream")
        with c:
            c.wait(lambda c: c.status is not None)
            assert c.status == status, c.status
    # the refused POSTs by operator and viewer are on the record; the
    # unauthenticated ones are not
    entries = settle(env, t, writes=4)
    refused = [e for e in entries if e["kind"] == "request" and e["status"] == 403]
    assert sorted(e["role"] for e in refused) == ["operator", "viewer"]
    assert all(e["route"] == "/v1/evidence/bundles" and e["result"] == "failure" for e in refused)


# ================================================================ the key, restarts

def test_signing_key_created_in_a_fresh_data_dir_and_kept_across_restarts(rs_daemon):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives import serialization
    env = rs_daemon(audit_sections())
    path = os.path.join(env.d.sections["server"]["data_dir"], "audit-signing.key")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    sk = base64.b64decode(open(path).read().strip())
    assert len(sk) == 64
    t = env.new_tenant()
    key = key_of(env, t)
    pk = Ed25519PrivateKey.from_private_bytes(sk[:32]).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64encode(pk).decode() == key["public_key"] == base64.b64encode(sk[32:]).decode()
    for i in range(2):
        quiet_record(env, t, i)
    before = settle(env, t, writes=2)
    assert env.d.stop() == 0
    # stopping signs the head
    cps = audit_rows(env, t.id, "audit_checkpoints")
    assert cps and cps[-1]["seq"] == before[-1]["seq"], cps
    env.d.start()
    assert key_of(env, t) == key
    quiet_record(env, t, "after")
    after = settle(env, t, writes=3)
    assert after[:len(before)] == before and after[-1]["seq"] == len(after)
    check_chain(after)
    v = verify(env, t)
    assert v["valid"] and v["entries"] == len(after) and v["key_id"] == key["key_id"], v
    for c in audit_rows(env, t.id, "audit_checkpoints"):
        assert signature_ok(key["public_key"], checkpoint_statement(t.id, c["seq"], c["hash"], c["time_ms"]),
                            c["signature"])
    # a malformed key file: the daemon refuses to start, and says why
    env.d.stop()
    with open(path, "w") as f:
        f.write("not a key\n")
    with pytest.raises(RuntimeError):
        env.d.start(timeout=5)
    env.d.signalled = True
    assert "is not an audit signing key" in env.d.log and path in env.d.log, env.d.log[-1500:]
    assert env.d.proc.returncode != 0
