"""The policies plugin end to end (RelaySync's /v1/policies), on SQLite and
PostgreSQL: the API document's example, create and update by name with
versions (policies_versions), identical re-posts, soft delete and revival,
dry runs, the `when` language and the `then` actions as the engine applies
them (priority order decides which policy routes a record's outbound job),
malformed expressions answered with the exact position and a caret,
[policies] max_per_tenant, tenant isolation, roles, and that a refused
request changes nothing.

Tests share one daemon per engine and make their own tenants; the limit
test starts its own."""
import json
import threading
import time

import pytest

from relaysync_support import (POLICY_ID_RE, crockford_id, linguistic_storage, shared_env,
                               scalar, sql_quote, table_snapshot, wait_for)
from relaysync_support import relaysync_daemon_factory
from relaysync_support import _envs, rs_daemon  # noqa: F401 (fixtures)
from users_support import parse_time

POLICY_KEYS = {"id", "name", "version", "priority", "when", "then", "created_at", "updated_at", "deleted_at"}
TABLES = ("policies_policies", "policies_versions", "relay_events")


@pytest.fixture
def env(engine, request, _envs, tmp_path_factory):
    """The module's daemon on the engine under test (started on first use)."""
    return shared_env(engine, request, _envs, tmp_path_factory, tag="policies")


@pytest.fixture(scope="module")
def _refusing():
    return {}


@pytest.fixture
def refusing(env, engine, _refusing):
    """A tenant of the module's daemon that only ever gets refused policy
    writes, so its tables must stay empty (made once per engine)."""
    if engine not in _refusing:
        _refusing[engine] = env.new_tenant("Refused")
    t = _refusing[engine]
    assert stored_count(env, t.id) == 0
    return t


def stored_count(env, tenant_id):
    """Policies, versions and policy events the tenant has, in one query."""
    q = sql_quote(tenant_id)
    return int(scalar(
        env.storage, "SELECT (SELECT COUNT(*) FROM policies_policies WHERE tenant = %s)"
        " + (SELECT COUNT(*) FROM policies_versions WHERE tenant = %s)"
        " + (SELECT COUNT(*) FROM relay_events WHERE tenant = %s AND type LIKE 'policy.%%')" % (q, q, q)))


# ---------------------------------------------------------------- helpers

def assert_error(reply, status, code):
    assert reply.status == status, reply
    assert isinstance(reply.body, dict) and set(reply.body) == {"error"}, reply.body
    assert reply.body["error"]["code"] == code, reply.body
    assert isinstance(reply.body["error"]["message"], str) and reply.body["error"]["message"]
    return reply.body["error"]


def snapshot(env, tenant_id):
    return table_snapshot(env.storage, TABLES, "tenant = " + sql_quote(tenant_id))


def policy_rows(env, tenant_id):
    return env.rows("policies_policies", "tenant = " + sql_quote(tenant_id), "name")


def version_rows(env, tenant_id, policy_id=None):
    where = "tenant = " + sql_quote(tenant_id)
    if policy_id:
        where += " AND policy_id = " + sql_quote(policy_id)
    rows = env.rows("policies_versions", where, "policy_id, version")
    for r in rows:
        r["doc"] = json.loads(r["doc"])
    return rows


def policy_events(env, tenant_id):
    return [(e["type"], e["payload"]) for e in env.event_rows(tenant_id) if e["type"].startswith("policy.")]


def dryrun(env, key, pid, record, expect=200):
    return env.api("POST", "/v1/policies/%s/dryrun" % pid, {"record": record}, key=key) \
        if expect is None else _ok(env.api("POST", "/v1/policies/%s/dryrun" % pid, {"record": record}, key=key),
                                   expect)


def _ok(reply, status):
    assert reply.status == status, reply
    return reply


def run_together(n, fn):
    """fn(i) for i in range(N) from N threads released at once: the results."""
    results, errors = [], []
    barrier = threading.Barrier(n)

    def go(i):
        try:
            barrier.wait()
            results.append(fn(i))
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    assert len(results) == n
    return results


def pointer(src, pos):
    return src + "\n" + " " * pos + "^"


# ====================================================== the document's example

def test_doc_example_create(env):
    """curl -X POST /v1/policies -d '{"name":"defer_media","when":"size>5120","then":"queue=wifi"}'."""
    t = env.new_tenant()
    r = env.post_policy(t.admin, "defer_media", "size>5120", "queue=wifi", expect=201)
    p = r.body
    assert set(p) == POLICY_KEYS, p
    assert POLICY_ID_RE.match(p["id"])
    assert {k: p[k] for k in ("name", "version", "priority", "when", "then", "deleted_at")} == \
        {"name": "defer_media", "version": 1, "priority": 100, "when": "size>5120", "then": "queue=wifi",
         "deleted_at": None}
    assert p["created_at"] == p["updated_at"] and abs(parse_time(p["created_at"]) - time.time()) < 60
    # stored: the policy, its first version (the body as posted), the event
    rows = policy_rows(env, t.id)
    assert len(rows) == 1
    row = rows[0]
    assert (row["id"], row["name"], row["version"], row["priority"], row["when_src"], row["then_src"],
            row["deleted_ms"]) == (p["id"], "defer_media", 1, 100, "size>5120", "queue=wifi", None)
    assert json.loads(row["doc"]) == {"name": "defer_media", "when": "size>5120", "then": "queue=wifi"}
    versions = version_rows(env, t.id)
    assert [(v["policy_id"], v["version"], v["doc"]) for v in versions] == \
        [(p["id"], 1, {"name": "defer_media", "when": "size>5120", "then": "queue=wifi"})]
    assert versions[0]["created_by"] == t.admin_key_id
    assert policy_events(env, t.id) == [("policy.created", {"id": p["id"], "name": "defer_media", "version": 1})]
    # read back: the list (curl /v1/policies) and by id
    assert env.policies(t.viewer).body == {"policies": [p]}
    assert env.api("GET", "/v1/policies/" + p["id"], key=t.viewer).body == p
    # the doc's example at work: a record over 5120 bytes goes to the wifi queue
    small = dryrun(env, t.viewer, p["id"], {"size": 5120}).body
    big = dryrun(env, t.viewer, p["id"], {"size": 5121}).body
    assert small == {"policy": p, "matched": False, "action": {"queue": None, "defer_ms": 0, "drop": False}}
    assert big == {"policy": p, "matched": True, "action": {"queue": "wifi", "defer_ms": 0, "drop": False}}


# ======================================================= versions by name

def test_update_by_name_makes_versions(env):
    t = env.new_tenant()
    v1 = env.post_policy(t.admin, "media", "size > 10", "queue=wifi", priority=7, expect=201).body
    time.sleep(0.005)
    v2 = env.post_policy(t.operator, "media", "size > 20", "queue=wifi", expect=200).body
    assert v2["id"] == v1["id"] and v2["version"] == 2 and v2["when"] == "size > 20"
    assert v2["priority"] == 7  # left out: kept
    assert v2["created_at"] == v1["created_at"] and v2["updated_at"] > v1["updated_at"]
    v3 = env.post_policy(t.admin, "media", "size > 20", "queue=cell; defer=10m", priority=3, expect=200).body
    assert (v3["version"], v3["priority"], v3["then"]) == (3, 3, "queue=cell; defer=10m")
    assert env.api("GET", "/v1/policies/" + v1["id"], key=t.viewer).body == v3
    versions = version_rows(env, t.id, v1["id"])
    assert [(v["version"], v["doc"]) for v in versions] == [
        (1, {"name": "media", "when": "size > 10", "then": "queue=wifi", "priority": 7}),
        (2, {"name": "media", "when": "size > 20", "then": "queue=wifi"}),
        (3, {"name": "media", "when": "size > 20", "then": "queue=cell; defer=10m", "priority": 3})]
    assert versions[1]["created_by"] != versions[0]["created_by"]  # the operator's key
    row = policy_rows(env, t.id)[0]
    assert (row["version"], row["when_src"], row["then_src"], row["priority"]) == \
        (3, "size > 20", "queue=cell; defer=10m", 3)
    assert policy_events(env, t.id) == [
        ("policy.created", {"id": v1["id"], "name": "media", "version": 1}),
        ("policy.updated", {"id": v1["id"], "name": "media", "version": 2}),
        ("policy.updated", {"id": v1["id"], "name": "media", "version": 3})]
    # names are case-sensitive: another policy
    other = env.post_policy(t.admin, "Media", "size > 10", "queue=wifi", expect=201).body
    assert other["id"] != v1["id"] and other["version"] == 1


def test_identical_repost_keeps_the_version(env):
    t = env.new_tenant()
    p = env.post_policy(t.admin, "same", "type == 'photo'", "queue=wifi", priority=50, expect=201).body
    before = snapshot(env, t.id)
    time.sleep(0.005)
    for prio in (None, 50):
        r = env.post_policy(t.admin, "same", "type == 'photo'", "queue=wifi", priority=prio, expect=200)
        assert r.body == p
    assert snapshot(env, t.id) == before  # no version row, no event, updated_at as it was
    # any difference is a new version: the priority alone, or one space
    assert env.post_policy(t.admin, "same", "type == 'photo'", "queue=wifi", priority=51).body["version"] == 2
    assert env.post_policy(t.admin, "same", "type ==  'photo'", "queue=wifi").body["version"] == 3
    assert len(version_rows(env, t.id)) == 3


def test_soft_delete_and_revival(env):
    t = env.new_tenant()
    keep = env.post_policy(t.admin, "keep", "size > 1", "queue=a", expect=201).body
    p = env.post_policy(t.admin, "gone", "size > 2", "queue=b", expect=201).body
    d = env.api("DELETE", "/v1/policies/" + p["id"], key=t.operator)
    assert d.status == 200, d
    assert d.body["deleted_at"] is not None and parse_time(d.body["deleted_at"])
    assert {k: d.body[k] for k in POLICY_KEYS - {"deleted_at"}} == {k: p[k] for k in POLICY_KEYS - {"deleted_at"}}
    # out of the list, still there by id, still in storage
    assert env.policies(t.viewer).body == {"policies": [keep]}
    assert env.api("GET", "/v1/policies/" + p["id"], key=t.viewer).body == d.body
    row = [r for r in policy_rows(env, t.id) if r["id"] == p["id"]][0]
    assert row["deleted_ms"] is not None and row["version"] == 1
    assert ("policy.deleted", {"id": p["id"]}) in policy_events(env, t.id)
    # deleting again: the same answer, no second event
    before = snapshot(env, t.id)
    assert env.api("DELETE", "/v1/policies/" + p["id"], key=t.admin).body == d.body
    assert snapshot(env, t.id) == before
    # a deleted policy no longer routes anything
    assert dryrun(env, t.viewer, keep["id"], {"size": 5}).body["matched"]
    # posting its name again brings it back as a new version (same id), even unchanged
    back = env.post_policy(t.admin, "gone", "size > 2", "queue=b", expect=200).body
    assert back["id"] == p["id"] and back["version"] == 2 and back["deleted_at"] is None
    assert [x["name"] for x in env.policies(t.viewer).body["policies"]] == ["gone", "keep"]
    assert [v["version"] for v in version_rows(env, t.id, p["id"])] == [1, 2]
    assert policy_events(env, t.id)[-1] == ("policy.updated", {"id": p["id"], "name": "gone", "version": 2})
    # unknown ids
    for pid in ("pol_" + "0" * 26, "nope", crockford_id("pol_")):
        assert_error(env.api("GET", "/v1/policies/" + pid, key=t.viewer), 404, "policy.not_found")
        assert_error(env.api("DELETE", "/v1/policies/" + pid, key=t.admin), 404, "policy.not_found")
        assert_error(env.api("POST", "/v1/policies/%s/dryrun" % pid, {"record": {}}, key=t.viewer), 404,
                     "policy.not_found")


def test_list_order_priority_then_name(env):
    t = env.new_tenant()
    for name, prio in (("zeta", 10), ("alpha", 100), ("beta", 10), ("gamma", 0), ("delta", 100000),
                       ("Alpha", 100)):
        env.post_policy(t.admin, name, "size > 1", "queue=q", priority=prio, expect=201)
    names = [p["name"] for p in env.policies(t.viewer).body["policies"]]
    assert names == ["gamma", "beta", "zeta", "Alpha", "alpha", "delta"]
    env.post_policy(t.admin, "zeta", "size > 1", "queue=q", priority=1)
    assert [p["name"] for p in env.policies(t.viewer).body["policies"]][:2] == ["gamma", "zeta"]


# ======================================================== what policies do

def wait_job(env, tenant_id, rid):
    jobs = wait_for(lambda: env.job_rows(tenant_id, target=rid), 5)
    assert jobs, "no record.sync job for %s" % rid
    return jobs


def test_priority_decides_the_route(env):
    """The first matching policy by priority, then name, routes a record's
    outbound record.sync job (its queue and the policy named in the job);
    drop means no job, defer delays it; a change of priority or a delete
    takes effect for the next record."""
    t = env.new_tenant()
    env.post_policy(t.admin, "big", "size > 1000", "queue=wifi", priority=10, expect=201)
    env.post_policy(t.admin, "alpha_site", "site == 'alpha'", "queue=cell", priority=10, expect=201)
    env.post_policy(t.admin, "catch_all", "true", "queue=bulk", priority=200, expect=201)
    urgent = env.post_policy(t.admin, "urgent", "payload.urgent == true", "queue=now", priority=1).body
    env.post_policy(t.admin, "scrap", "type == 'scrap'", "drop", priority=0, expect=201)
    env.post_policy(t.admin, "later", "type == 'later'", "defer=1h", priority=0, expect=201)
    blob = {"blob": "x" * 1200}

    def route(**fields):
        rec = env.create_record(t.admin, dict({"title": "r", "type": "inspection"}, **fields)).body
        return rec["id"]

    cases = [(route(site="alpha", payload=blob), "cell", "alpha_site"),  # both at 10: name order
             (route(site="beta", payload=blob), "wifi", "big"),
             (route(site="beta"), "bulk", "catch_all"),
             (route(site="alpha", payload=dict(blob, urgent=True)), "now", "urgent")]
    for rid, queue, policy in cases:
        jobs = wait_job(env, t.id, rid)
        assert [(j["kind"], j["queue"], j["payload"]["policy"]) for j in jobs] == \
            [("record.sync", queue, policy)], jobs
    env.post_policy(t.admin, "big", "size > 1000", "queue=wifi", priority=5)
    env.api("DELETE", "/v1/policies/" + urgent["id"], key=t.admin)
    rid = route(site="alpha", payload=dict(blob, urgent=True))
    assert [(j["queue"], j["payload"]["policy"]) for j in wait_job(env, t.id, rid)] == [("wifi", "big")]
    later = route(type="later")
    job = wait_job(env, t.id, later)[0]
    assert job["queue"] == "default" and job["payload"]["policy"] == "later"
    assert 3_600_000 - 5_000 <= job["run_at"] - job["created_at"] <= 3_600_000 + 5_000
    assert job["state"] == "queued"
    scrap = route(type="scrap")
    # a record after the dropped one gets its job, so the dropped one had its chance
    wait_job(env, t.id, route(site="beta"))
    assert env.job_rows(t.id, target=scrap) == []
    assert env.get_record(t.admin, scrap).body["status"] == "queued"


WHEN_CASES = [
    # (when, record, matched)
    ("size > 5120", {"size": 5121}, True),
    ("size > 5120", {"size": 5120}, False),
    ("size >= 5120", {"size": 5120}, True),
    ("size < 2.5", {"size": 2}, True),
    ("size <= -3", {"size": -3}, True),
    ("size == 5120", {"size": 5120.0}, True),
    ("size = 5120", {"size": 5120}, True),
    ("size != 5120", {"size": 5121}, True),
    ("size != 5120", {}, True),
    ("size > 1", {}, False),
    ("size > 1", {"size": "9"}, False),
    ("size == '5'", {"size": 5}, False),
    ("size == 9007199254740993", {"size": 9007199254740992}, False),
    ("size == 9007199254740993", {"size": 9007199254740993}, True),
    ("type == 'photo' and site in ['alpha', 'beta']", {"type": "photo", "site": "beta"}, True),
    ("type == 'photo' and site in ['alpha', 'beta']", {"type": "photo", "site": "gamma"}, False),
    ("type == 'photo' && site in ['alpha']", {"type": "photo", "site": "alpha"}, True),
    ("type == 'a' or type == 'b'", {"type": "b"}, True),
    ("type == 'a' || type == 'b'", {"type": "c"}, False),
    ("type == 'a' OR type == 'b' AND site == 'x'", {"type": "a", "site": "y"}, True),
    ("(type == 'a' or type == 'b') and site == 'x'", {"type": "a", "site": "y"}, False),
    ("not size > 5", {"size": 3}, True),
    ("! (size > 5)", {"size": 9}, False),
    ("NOT not size > 5", {"size": 9}, True),
    ("payload.priority >= 3 or not (status = 'draft')", {"payload": {"priority": 1}, "status": "draft"}, False),
    ("payload.priority >= 3 or not (status = 'draft')", {"payload": {"priority": 3}, "status": "draft"}, True),
    ("payload.a.b.c == 1", {"payload": {"a": {"b": {"c": 1}}}}, True),
    ("payload.a.b.c == null", {"payload": {"a": 5}}, True),
    ("payload.missing == null", {}, True),
    ("title contains \"urgent\"", {"title": "very urgent!"}, True),
    ("title contains 'URGENT'", {"title": "very urgent!"}, False),
    ("title contains ''", {"title": "x"}, True),
    ("payload.tags contains 'valve'", {"payload": {"tags": ["pump", "valve"]}}, True),
    ("payload.tags contains 'val'", {"payload": {"tags": ["valve"]}}, False),
    ("payload.n contains 1", {"payload": {"n": 123}}, False),
    ("site in ['alpha', null]", {"site": None}, True),
    ("size in [1, 2.0, '3']", {"size": 2}, True),
    ("size in [1, 2.0, '3']", {"size": 3}, False),
    ("payload.flag", {"payload": {"flag": True}}, True),
    ("payload.flag", {"payload": {"flag": 0}}, False),
    ("payload.flag", {"payload": {"flag": "no"}}, True),
    ("payload.flag", {"payload": {"flag": ""}}, False),
    ("payload.flag", {"payload": {"flag": [1]}}, False),
    ("payload.flag", {"payload": {"flag": {"a": 1}}}, False),
    ("deleted == false", {"deleted": False}, True),
    ("deleted", {"deleted": True}, True),
    ("true", {}, True),
    ("FALSE", {}, False),
    ("null", {}, False),
    ("title == 'it\\'s'", {"title": "it's"}, True),
    ("title == \"say \\\"hi\\\"\"", {"title": 'say "hi"'}, True),
    ("title == 'back\\\\slash'", {"title": "back\\slash"}, True),
    ("title < 'b'", {"title": "abc"}, True),
    ("title > 'B'", {"title": "a"}, True),
    ("created_at >= '2026-01-01'", {"created_at": "2026-11-22T08:00:00.000Z"}, True),
    ("status == 'queued' and type in ['photo','video'] and size > 1024",
     {"status": "queued", "type": "video", "size": 4096}, True),
]


def test_when_language(env):
    """Every rule of the `when` language, through POST .../dryrun on one
    policy updated with each expression in turn."""
    t = env.new_tenant()
    pid = None
    for when, record, matched in WHEN_CASES:
        p = env.post_policy(t.admin, "probe", when, "queue=q; defer=5m").body
        pid = pid or p["id"]
        assert p["id"] == pid and p["when"] == when
        r = dryrun(env, t.viewer, pid, record).body
        assert r["matched"] is matched, (when, record, r)
        want = {"queue": "q", "defer_ms": 300_000, "drop": False} if matched else \
            {"queue": None, "defer_ms": 0, "drop": False}
        assert r["action"] == want, (when, r)
        assert r["policy"]["when"] == when


THEN_CASES = [
    ("queue=wifi", {"queue": "wifi", "defer_ms": 0, "drop": False}),
    ("queue=wifi; defer=10m", {"queue": "wifi", "defer_ms": 600_000, "drop": False}),
    ("defer=1500ms,queue=Cell_2.b-c", {"queue": "Cell_2.b-c", "defer_ms": 1500, "drop": False}),
    (" defer = 30 ", {"queue": None, "defer_ms": 30_000, "drop": False}),
    ("defer=2h", {"queue": None, "defer_ms": 7_200_000, "drop": False}),
    ("defer=30d", {"queue": None, "defer_ms": 30 * 86_400_000, "drop": False}),
    ("DEFER=1S", {"queue": None, "defer_ms": 1000, "drop": False}),
    ("drop", {"queue": None, "defer_ms": 0, "drop": True}),
    ("queue=" + "q" * 63, {"queue": "q" * 63, "defer_ms": 0, "drop": False}),
]


def test_then_actions_and_dryrun(env):
    t = env.new_tenant()
    for then, action in THEN_CASES:
        p = env.post_policy(t.admin, "act", "size > 0", then).body
        assert dryrun(env, t.viewer, p["id"], {"size": 1}).body["action"] == action, then
    # a dry run takes a record as the API shows it: size and payload fields
    p = env.post_policy(t.admin, "act", "size > 100 and payload.kind == 'photo'", "queue=wifi").body
    rec = env.create_record(t.admin, {"title": "pic", "type": "photo", "payload": {"kind": "photo",
                                                                                   "b": "x" * 100}}).body
    assert dryrun(env, t.viewer, p["id"], rec).body["matched"] is True
    assert dryrun(env, t.viewer, p["id"], dict(rec, size=100)).body["matched"] is False
    # a sample without size gets the size the server would compute from its payload
    sample = {"payload": {"kind": "photo", "b": "x" * 100}}
    assert dryrun(env, t.viewer, p["id"], sample).body["matched"] is True
    assert dryrun(env, t.viewer, p["id"], {"payload": {"kind": "photo"}}).body["matched"] is False
    # its body: {"record": object}
    for body in ({}, {"record": None}, {"record": [1]}, {"record": "x"}):
        assert_error(env.api("POST", "/v1/policies/%s/dryrun" % p["id"], body, key=t.viewer), 422,
                     "validation_failed")
    assert_error(env.api("POST", "/v1/policies/%s/dryrun" % p["id"], key=t.viewer, raw=b"nope"), 400,
                 "invalid_json")
    # a dry run changes nothing
    before = snapshot(env, t.id)
    dryrun(env, t.viewer, p["id"], rec)
    assert snapshot(env, t.id) == before


# ==================================================== refused policies

BAD_EXPRESSIONS = [
    # (when, then, code, position, message without the field prefix and "(at character N)")
    ("size >", "queue=wifi", "policy.invalid_when", 6, "expected a value after '>', found end of expression"),
    ("size > 'abc", "queue=wifi", "policy.invalid_when", 7, "unterminated string"),
    ("size >> 3", "queue=wifi", "policy.invalid_when", 6, "unknown operator '>>'"),
    ("(size > 3", "queue=wifi", "policy.invalid_when", 9,
     "expected ')' to close the '(' at 0, found end of expression"),
    ("sise > 1", "queue=wifi", "policy.invalid_when", 0,
     "unknown field 'sise'; records have id, title, type, site, status, size, causal, deleted, created_at,"
     " updated_at and payload.*"),
    ("size > 1", "queue=", "policy.invalid_then", 6, "expected a queue name after 'queue=', found end of actions"),
    ("size > 1", "defer=99d", "policy.invalid_then", 6, "duration longer than the maximum of 30d"),
    ("size > 1", "drop, queue=wifi", "policy.invalid_then", 6, "'drop' cannot be combined with queue= or defer="),
    # more of the same kind
    ("size > 1 and", "queue=q", "policy.invalid_when", 12, "expected a value after 'and', found end of expression"),
    ("size > 1)", "queue=q", "policy.invalid_when", 8, "unmatched ')'"),
    ("size > 1 size", "queue=q", "policy.invalid_when", 9,
     "expected 'and', 'or' or end of expression, found 'size'"),
    ("size in [1,2", "queue=q", "policy.invalid_when", 12, "expected ',' or ']' in the list, found end of expression"),
    ("size in [1, size]", "queue=q", "policy.invalid_when", 12,
     "expected a literal (number, string, true, false or null) after ',', found 'size'"),
    ("size => 3", "queue=q", "policy.invalid_when", 6, "unknown operator '=>'"),
    ("", "queue=q", "policy.invalid_when", 0, "empty expression"),
    ("   ", "queue=q", "policy.invalid_when", 3, "empty expression"),
    ("1e5 > size", "queue=q", "policy.invalid_when", 1, "exponents are not supported, found number '1e5'"),
    ("size > 99999999999999999999", "queue=q", "policy.invalid_when", 7,
     "number '99999999999999999999' is out of range"),
    ("payload. > 1", "queue=q", "policy.invalid_when", 8, "expected a field name after '.', found ' '"),
    ("title == 'a\\n'", "queue=q", "policy.invalid_when", 11,
     "invalid escape in string (only \\\\, \\\" and \\' are allowed)"),
    ("size > 1 é", "queue=q", "policy.invalid_when", 9, "unexpected character 0xc3"),
    ("title contains 'a' or Size > 2", "queue=q", "policy.invalid_when", 22,
     "unknown field 'Size'; records have id, title, type, site, status, size, causal, deleted, created_at,"
     " updated_at and payload.*"),
    ("size > 1 and payload.x == 1 or titles == 'a'", "queue=q", "policy.invalid_when", 31,
     "unknown field 'titles'; records have id, title, type, site, status, size, causal, deleted, created_at,"
     " updated_at and payload.*"),
    ("(" * 33 + "size" + ")" * 33, "queue=q", "policy.invalid_when", 32,
     "expression nested too deeply (more than 32 levels of parentheses and 'not')"),
    ("size > 1", "queue=wifi,", "policy.invalid_then", 11, "expected an action after ',', found end of actions"),
    ("size > 1", "teleport", "policy.invalid_then", 0, "unknown action 'teleport' (expected queue=, defer= or drop)"),
    ("size > 1", "defer=0", "policy.invalid_then", 6, "duration must be positive"),
    ("size > 1", "defer=10x", "policy.invalid_then", 8, "unknown duration unit 'x' (use ms, s, m, h or d)"),
    ("size > 1", "defer=", "policy.invalid_then", 6,
     "expected a duration (a positive whole number with ms, s, m, h or d) after 'defer=', found end of actions"),
    ("size > 1", "queue=a b", "policy.invalid_then", 8, "expected ',' or ';' between actions, found 'b'"),
    ("size > 1", "queue=wi/fi", "policy.invalid_then", 8, "invalid character '/' in queue name"),
    ("size > 1", "queue=" + "q" * 64, "policy.invalid_then", 69, "queue name longer than 63 characters"),
    ("size > 1", "drop=1", "policy.invalid_then", 4, "'drop' takes no value"),
    ("size > 1", "queue=wifi, queue=x", "policy.invalid_then", 12, "duplicate action 'queue'"),
    ("size > 1", "defer=1h, drop", "policy.invalid_then", 10, "'drop' cannot be combined with queue= or defer="),
    ("size > 1", "queue wifi", "policy.invalid_then", 6, "expected '=' after 'queue', found 'w'"),
    ("size > 1", "", "policy.invalid_then", 0, "empty action list"),
    # both wrong: the `when` is reported
    ("size >", "teleport", "policy.invalid_when", 6, "expected a value after '>', found end of expression"),
]


@pytest.mark.parametrize("when, then, code, position, message", BAD_EXPRESSIONS,
                         ids=["%d" % i for i in range(len(BAD_EXPRESSIONS))])
def test_malformed_expressions(env, refusing, when, then, code, position, message):
    t = refusing
    r = env.post_policy(t.admin, "bad", when, then, expect=None)
    err = assert_error(r, 422, code)
    field = "when" if code == "policy.invalid_when" else "then"
    src = when if field == "when" else then
    assert set(err) == {"code", "message", "field", "position", "pointer"}, err
    assert err["field"] == field and err["position"] == position
    assert err["pointer"] == pointer(src, position)
    assert err["message"] == "%s: %s (at character %d)" % (field, message, position + 1)
    assert stored_count(env, t.id) == 0


def test_expression_size_limits(env):
    t = env.new_tenant()
    # 4096 bytes are fine, one more is not; a long source gets no pointer
    longest = "size > 1" + " " * (4096 - 8)
    assert env.post_policy(t.admin, "long", longest, "queue=q", expect=201).body["when"] == longest
    err = assert_error(env.post_policy(t.admin, "long2", longest + " ", "queue=q", expect=None), 422,
                       "policy.invalid_when")
    assert err["position"] == 4096 and err["pointer"] is None and "longer than 4096 bytes" in err["message"]
    err = assert_error(env.post_policy(t.admin, "long3", "size > 1 and " + "x" * 300, "queue=q", expect=None),
                       422, "policy.invalid_when")
    assert err["position"] == 13 and err["pointer"] is None
    # 32 levels of nesting are fine
    deep = "(" * 32 + "size > 1" + ")" * 32
    assert env.post_policy(t.admin, "deep", deep, "queue=q", expect=201).body["when"] == deep
    nots = "not " * 32 + "size > 1"
    assert env.post_policy(t.admin, "nots", nots, "queue=q", expect=201).status == 201
    err = assert_error(env.post_policy(t.admin, "nots2", "not " + nots, "queue=q", expect=None), 422,
                       "policy.invalid_when")
    assert err["position"] == 128
    # a long chain of and/or is not nesting
    chain = " or ".join("size == %d" % i for i in range(250))
    assert len(chain) < 4096
    p = env.post_policy(t.admin, "chain", chain, "queue=q", expect=201).body
    assert dryrun(env, t.viewer, p["id"], {"size": 249}).body["matched"] is True


@pytest.mark.parametrize("body, locs", [
    ({"when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": "", "when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": "n" * 65, "when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": "has space", "when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": "../etc/passwd", "when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": "naïve", "when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": "x'; DROP TABLE policies_policies;--", "when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": 5, "when": "size > 1", "then": "queue=q"}, ["name"]),
    ({"name": "n", "then": "queue=q"}, ["when"]),
    ({"name": "n", "when": 5, "then": "queue=q"}, ["when"]),
    ({"name": "n", "when": None, "then": "queue=q"}, ["when"]),
    ({"name": "n", "when": "size > 1"}, ["then"]),
    ({"name": "n", "when": "size > 1", "then": ["queue=q"]}, ["then"]),
    ({"name": "n", "when": "size > 1", "then": "queue=q", "priority": -1}, ["priority"]),
    ({"name": "n", "when": "size > 1", "then": "queue=q", "priority": 100001}, ["priority"]),
    ({"name": "n", "when": "size > 1", "then": "queue=q", "priority": 1.5}, ["priority"]),
    ({"name": "n", "when": "size > 1", "then": "queue=q", "priority": "1"}, ["priority"]),
    ({"name": "n", "when": "size > 1", "then": "queue=q", "priority": None}, ["priority"]),
    ({"name": "n", "when": "size > 1", "then": "queue=q", "enabled": True}, ["enabled"]),
    ({}, ["name", "when", "then"]),
])
def test_invalid_bodies(env, refusing, body, locs):
    t = refusing
    err = assert_error(env.api("POST", "/v1/policies", body, key=t.admin), 422, "validation_failed")
    assert [d["loc"] for d in err["details"]] == [["body", l] for l in locs], err
    assert err["message"] == "%s: %s" % (locs[0], err["details"][0]["msg"])
    assert stored_count(env, t.id) == 0


def test_malformed_json_and_edges(env):
    t = env.new_tenant()
    before = snapshot(env, t.id)
    for raw in (b"", b"nope", b"[]", b'{"name":"a","name":"b","when":"size>1","then":"drop"}',
                b'{"name":"a","when":"size>1","then":"drop"', b'{"name":"\xff","when":"size>1","then":"drop"}',
                b'{"name":"a","when":"size > 1","then":"drop","priority":1e400}'):
        assert_error(env.api("POST", "/v1/policies", key=t.admin, raw=raw), 400, "invalid_json")
    assert snapshot(env, t.id) == before
    # the edges that are fine
    for name in ("a", "n" * 64, "A.b-c_9", ".", ".."):
        env.post_policy(t.admin, name, "size > 1", "drop", expect=201)
    env.post_policy(t.admin, "p0", "size > 1", "drop", priority=0, expect=201)
    env.post_policy(t.admin, "pmax", "size > 1", "drop", priority=100000, expect=201)
    # strings are data: stored as sent
    tricky = "title == 'x\\'; DROP TABLE policies_policies; --' or site == \"../../etc\""
    p = env.post_policy(t.admin, "tricky", tricky, "queue=q", expect=201).body
    assert p["when"] == tricky and [r["when_src"] for r in policy_rows(env, t.id) if r["name"] == "tricky"] == [tricky]
    assert dryrun(env, t.viewer, p["id"], {"title": "x'; DROP TABLE policies_policies; --"}).body["matched"]
    assert "policies_policies" in env.storage.tables()


# ================================================== limits, tenants, roles

def test_max_per_tenant(rs_daemon):
    env = rs_daemon({"policies": {"max_per_tenant": "3"}})
    t = env.new_tenant()
    other = env.new_tenant("Other")
    ps = [env.post_policy(t.admin, "p%d" % i, "size > %d" % i, "queue=q", expect=201).body for i in range(3)]
    before = snapshot(env, t.id)
    err = assert_error(env.post_policy(t.admin, "p3", "size > 3", "queue=q", expect=None), 422, "policy.limit")
    assert "3" in err["message"]
    assert snapshot(env, t.id) == before
    # updating one that exists is not another policy
    assert env.post_policy(t.admin, "p0", "size > 100", "queue=q", expect=200).body["version"] == 2
    # the limit is per tenant
    env.post_policy(other.admin, "p3", "size > 3", "queue=q", expect=201)
    # a deleted policy does not count, and reviving one does when the tenant is full
    env.api("DELETE", "/v1/policies/" + ps[1]["id"], key=t.admin)
    env.post_policy(t.admin, "p3", "size > 3", "queue=q", expect=201)
    assert_error(env.post_policy(t.admin, "p1", "size > 1", "queue=q", expect=None), 422, "policy.limit")
    assert [p["name"] for p in env.policies(t.viewer).body["policies"]] == ["p0", "p2", "p3"]
    # eight creates at once with room for three: three get in
    t3 = env.new_tenant("Race")
    results = run_together(8, lambda i: env.post_policy(t3.admin, "r%d" % i, "size > 1", "queue=q", expect=None))
    assert sorted(r.status for r in results) == [201] * 3 + [422] * 5, results
    assert all(r.error_code() == "policy.limit" for r in results if r.status == 422)
    assert len(policy_rows(env, t3.id)) == 3 and len(version_rows(env, t3.id)) == 3


def test_concurrent_posts_of_one_name(env):
    """Writers of one name queue up: one creates, the others update it in
    turn, and every version number is used exactly once."""
    t = env.new_tenant()
    results = run_together(10, lambda i: env.post_policy(t.admin, "hot", "size > %d" % i, "queue=q", expect=None))
    assert sorted(r.status for r in results) == [200] * 9 + [201], results
    assert sorted(r.body["version"] for r in results) == list(range(1, 11))
    assert len({r.body["id"] for r in results}) == 1
    rows = policy_rows(env, t.id)
    assert len(rows) == 1 and rows[0]["version"] == 10
    versions = version_rows(env, t.id)
    assert [v["version"] for v in versions] == list(range(1, 11))
    assert sorted(v["doc"]["when"] for v in versions) == sorted("size > %d" % i for i in range(10))
    assert [e[0] for e in policy_events(env, t.id)] == ["policy.created"] + ["policy.updated"] * 9
    # the same body from many writers at once: no new version
    final = rows[0]["when_src"]
    again = run_together(8, lambda i: env.post_policy(t.admin, "hot", final, "queue=q", expect=None))
    assert all(r.status == 200 and r.body["version"] == 10 for r in again), again
    assert len(version_rows(env, t.id)) == 10


def test_cross_tenant_access_refused(env):
    t1, t2 = env.new_tenant("Owner"), env.new_tenant("Intruder")
    p = env.post_policy(t1.admin, "secret_route", "payload.vip == 'Ada 7f3a'", "queue=vip", expect=201).body
    before = snapshot(env, t1.id)
    for r in (env.api("GET", "/v1/policies/" + p["id"], key=t2.admin),
              env.api("DELETE", "/v1/policies/" + p["id"], key=t2.admin),
              env.api("POST", "/v1/policies/%s/dryrun" % p["id"], {"record": {"payload": {"vip": "Ada 7f3a"}}},
                      key=t2.viewer)):
        assert_error(r, 404, "policy.not_found")
        assert "Ada 7f3a" not in json.dumps(r.body) and "secret_route" not in json.dumps(r.body)
    assert env.policies(t2.admin).body == {"policies": []}
    assert snapshot(env, t1.id) == before
    # the same name in another tenant is another policy; changing it leaves the first alone
    q = env.post_policy(t2.admin, "secret_route", "size > 100000", "drop", expect=201).body
    assert q["id"] != p["id"] and q["version"] == 1
    env.post_policy(t2.admin, "secret_route", "size > 200000", "drop", expect=200)
    assert env.api("GET", "/v1/policies/" + p["id"], key=t1.viewer).body == p
    assert snapshot(env, t1.id) == before
    # and another tenant's policies never route this tenant's records
    rec = env.create_record(t2.admin, {"title": "r", "type": "x", "payload": {"vip": "Ada 7f3a"}}).body
    jobs = wait_for(lambda: env.job_rows(t2.id, target=rec["id"]), 5)
    assert [(j["queue"], j["payload"]["policy"]) for j in jobs] == [("default", None)]


def test_roles(env):
    t = env.new_tenant()
    p = env.post_policy(t.admin, "mine", "size > 1", "queue=q", expect=201).body
    before = snapshot(env, t.id)
    for r in (env.post_policy(t.viewer, "theirs", "size > 1", "queue=q", expect=None),
              env.post_policy(t.viewer, "mine", "size > 2", "queue=q", expect=None),
              env.api("DELETE", "/v1/policies/" + p["id"], key=t.viewer),
              env.api("POST", "/v1/policies", {"name": "x", "when": "size > 1", "then": "drop"},
                      key=env.token(t.viewer), how="bearer")):
        assert_error(r, 403, "forbidden")
    assert snapshot(env, t.id) == before
    # viewers read and dry-run; operators write
    assert env.policies(t.viewer).body == {"policies": [p]}
    assert env.api("GET", "/v1/policies/" + p["id"], key=t.viewer).body == p
    assert dryrun(env, t.viewer, p["id"], {"size": 2}).body["matched"]
    assert env.post_policy(t.operator, "mine", "size > 2", "queue=q", expect=200).body["version"] == 2
    assert env.api("DELETE", "/v1/policies/" + p["id"], key=t.operator).status == 200
    # no credential or a bad one: 401 everywhere
    for method, path in (("GET", "/v1/policies"), ("POST", "/v1/policies"), ("GET", "/v1/policies/" + p["id"]),
                         ("DELETE", "/v1/policies/" + p["id"]), ("POST", "/v1/policies/%s/dryrun" % p["id"])):
        for key in (None, "rs_live_nope.nope"):
            assert env.api(method, path, {"record": {}}, key=key).status == 401, (method, path)


def test_name_order_does_not_depend_on_the_collation(make_daemon, engine, request, tmp_path):
    """Ties in priority are broken by name in byte order on both engines,
    whatever collation the PostgreSQL database was made with, so the same
    policies route a record the same way on SQLite and PostgreSQL."""
    st = linguistic_storage(engine, request, tmp_path)
    env = relaysync_daemon_factory(make_daemon, st)()
    t = env.new_tenant()
    for i, name in enumerate(["bulk", "Urgent", "alpha", "Alpha", "_x", ".y"]):
        env.post_policy(t.admin, name, "true", "queue=q%d" % i, priority=10, expect=201)
    names = [p["name"] for p in env.policies(t.viewer).body["policies"]]
    assert names == [".y", "Alpha", "Urgent", "_x", "alpha", "bulk"]
    rec = env.create_record(t.admin, {"title": "r", "type": "x"}).body
    jobs = wait_for(lambda: env.job_rows(t.id, target=rec["id"]), 5)
    assert [(j["queue"], j["payload"]["policy"]) for j in jobs] == [("q5", ".y")]


def test_caret_under_the_character_after_non_ascii_text(env, refusing):
    """`position` is a byte offset; the pointer's caret and the message's
    "at character N" count characters, so they stay under the fault when
    text before it is not ASCII."""
    when = "title == 'Überprüfung ✓' and sise > 1"
    pos = len(when[:when.index("sise")].encode())
    chars = when.index("sise")
    assert pos > chars
    err = assert_error(env.post_policy(refusing.admin, "umlaut", when, "queue=q", expect=None), 422,
                       "policy.invalid_when")
    assert err["position"] == pos
    assert err["pointer"] == when + "\n" + " " * chars + "^"
    assert err["message"].endswith("(at character %d)" % (chars + 1))
    then = "queue=wifi; défer=1h"
    err = assert_error(env.post_policy(refusing.admin, "umlaut", "size > 1", then, expect=None), 422,
                       "policy.invalid_then")
    assert err["position"] == then.index("d")
    assert stored_count(env, refusing.id) == 0
