"""Bad input against every RelaySync route, on SQLite and PostgreSQL.

The routes (from plugins/records/read.c and write.c, plugins/policies/
routes.c, plugins/sync/feed.c, push.c and queue.c):

  GET /v1/records, GET|PATCH|DELETE /v1/records/:id, POST /v1/records,
  GET|POST /v1/policies, GET|DELETE /v1/policies/:id,
  POST /v1/policies/:id/dryrun, GET /v1/sync/changes, POST /v1/sync/push,
  GET /v1/sync/queue, POST /v1/sync/retry/:job

Each gets malformed JSON, bodies that are not objects, oversized bodies,
invalid UTF-8, huge numbers (1e400, 2^64, 2^63), nesting 10000 deep,
duplicate keys, wrong types and over-long strings in every field, path
traversal and SQL metacharacters in every path segment, query parameter,
header and identifier field, and HTTP request smuggling on raw sockets
(Content-Length with Transfer-Encoding, two Content-Lengths, obfuscated
Transfer-Encoding, obs-fold, bare CR, chunk-size overflow) with a second
request hidden in the body.  For every case: the status is in the right
class (4xx; a batch push answers 200 with each item "invalid"), a body is
RelaySync's {"error": {"code", "message", ...}}, the daemon still answers,
and the plugins' tables (records_records, policies_policies,
policies_versions, relay_events, relay_jobs, relay_idempotency: row
counts, last sequence numbers and update times) are exactly as before.

Free-text fields (title, type, site, payload, a policy's `when` string
literals, Idempotency-Key) may hold SQL metacharacters and traversal
strings: those are stored and returned verbatim and match only
themselves (test_text_is_data_not_code).

One daemon per engine for the module.  The tenant under attack has a
drop-everything policy, so no record.sync job changes the tables behind
the test's back."""
import base64
import http.client
import json
import subprocess
import urllib.parse

import pytest

from conftest import finish_all, parse_responses, recv_until
from relaysync_support import crockford_id, shared_env, sql_quote

SQLI = "'; DROP TABLE records_records; --"
SQLI2 = "rec_' OR '1'='1"
TRAVERSAL = "../../etc/passwd"
HUGE = ["1e400", "-1e400", "18446744073709551616", "9223372036854775808", "-9223372036854775809",
        "123456789012345678901234567890"]
MAX_BODY = 1024 * 1024  # relaysync_support: [limits] max_body_size = 1m


_worlds = {}


@pytest.fixture(scope="module")
def _envs():
    envs = {}
    yield envs
    for w in list(_worlds.values()):
        w.close()
    _worlds.clear()
    finish_all([e.d for e in envs.values()])


class PsqlSession:
    """One psql kept open for the module: a snapshot per case through a
    new psql process would cost more than the case."""

    def __init__(self, storage):
        pg = storage.pg
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(pg.port), "-U",
                                      pg.user, "-d", storage.dbname],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def query(self, sql):
        self.proc.stdin.write(sql.encode() + b";\n\\echo @@end@@\n")
        self.proc.stdin.flush()
        rows = []
        while True:
            line = self.proc.stdout.readline()
            assert line, "psql went away"
            line = line.decode().rstrip("\n")
            if line == "@@end@@":
                return rows
            if line:
                rows.append(tuple(line.split("|")))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


class World:
    """The module's daemon on one engine, a tenant whose records never get
    jobs, one live record and one policy of it."""

    def __init__(self, env):
        self.env = env
        self.t = env.new_tenant("Bad Input Ops")
        self.key = self.t.admin
        env.post_policy(self.key, "hold_everything", "true", "drop", expect=201)
        self.pol = env.policies(self.key).body["policies"][0]
        self.rec = env.create_record(self.key, {"title": "target", "type": "inspection", "site": "alpha",
                                                "payload": {"n": 1}}, idem="world-1").body
        self.path = "/v1/records/" + self.rec["id"]
        self.psql = PsqlSession(env.storage) if env.storage.engine == "pgsql" else None

    def close(self):
        if self.psql:
            self.psql.close()

    def snapshot(self):
        """One query: what any change to the plugins' tables would move."""
        sql = ("SELECT (SELECT COUNT(*) FROM records_records), (SELECT COALESCE(MAX(change_seq), 0) FROM"
               " records_records), (SELECT COALESCE(MAX(updated_ms), 0) FROM records_records),"
               " (SELECT COUNT(*) FROM records_records WHERE deleted_ms IS NOT NULL),"
               " (SELECT COUNT(*) FROM policies_policies), (SELECT COALESCE(MAX(updated_ms), 0) FROM"
               " policies_policies), (SELECT COUNT(*) FROM policies_policies WHERE deleted_ms IS NOT NULL),"
               " (SELECT COUNT(*) FROM policies_versions), (SELECT COUNT(*) FROM relay_events),"
               " (SELECT COALESCE(MAX(seq), 0) FROM relay_events), (SELECT COUNT(*) FROM relay_jobs),"
               " (SELECT COALESCE(MAX(updated_at), 0) FROM relay_jobs), (SELECT COUNT(*) FROM relay_idempotency),"
               " (SELECT causal FROM records_records WHERE id = %s)" % sql_quote(self.rec["id"]))
        names = ("records", "records.change_seq", "records.updated_ms", "records.deleted", "policies",
                 "policies.updated_ms", "policies.deleted", "policies_versions", "relay_events", "relay_events.seq",
                 "relay_jobs", "relay_jobs.updated_at", "relay_idempotency", "target.causal")
        rows = self.psql.query(sql) if self.psql else self.env.storage.query(sql)
        return dict(zip(names, rows[0]))


@pytest.fixture
def world(engine, request, _envs, tmp_path_factory):
    if engine not in _worlds or _worlds[engine].env is not _envs.get(engine):
        _worlds[engine] = World(shared_env(engine, request, _envs, tmp_path_factory, tag="badinput"))
    w = _worlds[engine]
    assert w.env.d.running(), w.env.d.log[-3000:]
    return w


# ------------------------------------------------------------------ helpers

def send(w, method, path, body=None, headers=None, key="admin"):
    """(status, headers, raw body) of one request; BODY: bytes, or a
    dict/list sent as JSON.  KEY "admin": the world's admin key; None: no
    credentials; else that key."""
    h = {}
    if key == "admin":
        h["X-API-Key"] = w.key
    elif key is not None:
        h["X-API-Key"] = key
    if body is not None and not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode()
    if body is not None:
        h["Content-Type"] = "application/json"
    h.update(headers or {})
    conn = http.client.HTTPConnection(w.env.d.host, w.env.d.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


def shape_problem(status, raw):
    """What is wrong with the error body RAW of a non-2xx answer (None:
    nothing): RelaySync's {"error": {"code": str, "message": str, ...}}."""
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return "body is not JSON: %r" % raw[:200]
    if not (isinstance(doc, dict) and set(doc) == {"error"} and isinstance(doc["error"], dict)):
        return "not the error shape: %r" % raw[:200]
    e = doc["error"]
    if not (isinstance(e.get("code"), str) and e["code"] and isinstance(e.get("message"), str) and e["message"]):
        return "error without code/message: %r" % raw[:200]
    return None


def judge(label, status, raw, expect, code=None):
    """A failure message for one case, or None.  EXPECT: statuses allowed;
    CODE: the error code (or codes) expected."""
    if status not in expect:
        return "%s: status %s, expected %s: %r" % (label, status, sorted(expect), raw[:300])
    if status >= 300:
        problem = shape_problem(status, raw)
        if problem:
            return "%s: %s" % (label, problem)
        if code is not None:
            got = json.loads(raw)["error"]["code"] if raw else None
            if got not in ((code,) if isinstance(code, str) else code):
                return "%s: code %r, expected %r: %r" % (label, got, code, raw[:300])
    return None


class Battery:
    """Runs cases against one world; at the end, asserts every case held,
    the tables did not move and the daemon still answers."""

    def __init__(self, w):
        self.w = w
        self.before = w.snapshot()
        self.failures = []
        self.n = 0

    def case(self, label, method, path, body=None, headers=None, expect=(400,), code=None, key="admin"):
        self.n += 1
        try:
            status, hdrs, raw = send(self.w, method, path, body, headers, key)
        except (OSError, http.client.HTTPException) as e:
            self.failures.append("%s: no answer (%r)" % (label, e))
            return None
        problem = judge(label, status, raw, set(expect), code)
        if problem:
            self.failures.append(problem)
        return status, hdrs, raw

    def done(self):
        assert self.n, "no case ran"
        assert not self.failures, "%d of %d cases failed:\n  %s" % (len(self.failures), self.n,
                                                                    "\n  ".join(self.failures[:40]))
        status, _, raw = send(self.w, "GET", self.w.path)
        assert status == 200 and json.loads(raw)["causal"] == self.w.rec["causal"], raw
        after = self.w.snapshot()
        assert after == self.before, "the tables moved: %r" % {
            k: (self.before[k], after[k]) for k in after if after[k] != self.before[k]}


def q(text):
    return urllib.parse.quote(text, safe="")


def b64(text):
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def nest(depth, kind="object"):
    if kind == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    return b"[" * depth + b"1" + b"]" * depth


# The routes that read a JSON body: (name, method, path template, a valid body's fields).  The
# battery never sends a valid body: each case breaks it.
def body_routes(w):
    return {
        "create": ("POST", "/v1/records", {"title": "t", "type": "x", "site": "s", "status": "draft",
                                           "payload": {}}),
        "patch": ("PATCH", w.path, {"title": "t", "type": "x", "site": "s", "status": "draft", "payload": {},
                                    "causal": w.rec["causal"]}),
        "delete": ("DELETE", w.path, {"causal": w.rec["causal"]}),
        "policy": ("POST", "/v1/policies", {"name": "p1", "when": "size > 5", "then": "queue=wifi",
                                            "priority": 5}),
        "dryrun": ("POST", "/v1/policies/%s/dryrun" % w.pol["id"], {"record": {"title": "t", "size": 9}}),
        "push": ("POST", "/v1/sync/push", {"changes": [{"op": "create", "idempotency_key": "never",
                                                        "record": {"title": "t", "type": "x"}}]}),
    }


BODY_ROUTES = ["create", "patch", "delete", "policy", "dryrun", "push"]


def splice(valid, field, literal):
    """The JSON text of VALID with FIELD's value replaced by the raw text
    LITERAL (bytes): how to send what json.dumps cannot write."""
    marker = "@@%s@@" % field
    doc = dict(valid)
    doc[field] = marker
    return json.dumps(doc).encode().replace(json.dumps(marker).encode(), literal)


# ============================================================ JSON bodies

MALFORMED = [b"{", b'{"title": }', b"{'title': 'x'}", b'{"title": "x",}', b'{"title": "x"} trailing',
             b'{"title": "x"}{"title": "y"}', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
             b"/* c */ {}", b'{"a": 01}', b'{"a": .5}', b'{"a": 0x10}', b'{"a": "\x01"}', b'{"a": "tab\there"}',
             b'{"a": "\\x41"}', b"\xef\xbb\xbf{}", b"{" * 3 + b"}", b"\x00{}", b'{"a": tru}', b"{\"a\" 1}"]
NOT_OBJECTS = [b"[]", b'"text"', b"1", b"-0.5", b"null", b"true", b'[{"title": "x", "type": "y"}]']
BAD_UTF8 = [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80", b"\xe2\x82"]
BAD_ESCAPES = [b'"\\ud800"', b'"\\udc00x"', b'"a\\u0000b"', b'"\\u12"', b'"\\q"']


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_malformed_and_non_object_bodies(world, route):
    method, path, valid = body_routes(world)[route]
    b = Battery(world)
    for i, body in enumerate(MALFORMED):
        b.case("%s malformed #%d %r" % (route, i, body[:20]), method, path, body, code="invalid_json")
    for body in NOT_OBJECTS:
        b.case("%s not an object %r" % (route, body[:20]), method, path, body, code="invalid_json")
    if method != "DELETE":  # DELETE without a body is a delete
        b.case("%s empty body" % route, method, path, b"", code="invalid_json")
    b.done()


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_invalid_utf8_and_escapes(world, route):
    method, path, valid = body_routes(world)[route]
    field = next(iter(valid))
    b = Battery(world)
    for bad in BAD_UTF8:
        b.case("%s raw %r in a string" % (route, bad), method, path, splice(valid, field, b'"x' + bad + b'y"'),
               code="invalid_json")
        b.case("%s raw %r in a key" % (route, bad), method, path,
               json.dumps(valid).encode()[:-1] + b', "k' + bad + b'": 1}', code="invalid_json")
    for esc in BAD_ESCAPES:
        b.case("%s escape %r" % (route, esc), method, path, splice(valid, field, esc), code="invalid_json")
    b.done()


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_huge_numbers_deep_nesting_duplicate_keys(world, route):
    method, path, valid = body_routes(world)[route]
    b = Battery(world)
    for field in valid:
        for n in HUGE:
            b.case("%s %s=%s" % (route, field, n), method, path, splice(valid, field, n.encode()),
                   code="invalid_json")
        for kind in ("object", "array"):
            b.case("%s %s nested 10000 deep (%s)" % (route, field, kind), method, path,
                   splice(valid, field, nest(10000, kind)), code="invalid_json")
        text = json.dumps(valid).encode()
        b.case("%s duplicate %s" % (route, field), method, path,
               text[:-1] + b", " + json.dumps({field: valid[field]}).encode()[1:], code="invalid_json")
    # nested duplicates and nesting as the whole body
    b.case("%s nested duplicate keys" % route, method, path,
           splice(valid, next(iter(valid)), b'{"k": 1, "k": 2}'), code="invalid_json")
    b.case("%s body nested 10000 deep" % route, method, path, nest(10000), code="invalid_json")
    b.case("%s body nested 100000 deep" % route, method, path, nest(100000, "array"), code="invalid_json")
    b.done()


def oversized(w, method, path):
    """A head announcing MAX_BODY + 1 bytes: refused from the head alone."""
    head = ("%s %s HTTP/1.1\r\nHost: relay.test\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n"
            "Content-Length: %d\r\n\r\n" % (method, path, w.key, MAX_BODY + 1)).encode()
    with w.env.d.sock() as s:
        s.sendall(head + b"{")
        got, closed = recv_until(s, lambda x: False, 5)
    return parse_responses(got), closed


@pytest.mark.parametrize("route", BODY_ROUTES)
def test_oversized_bodies(world, route):
    method, path, valid = body_routes(world)[route]
    b = Battery(world)
    rs, closed = oversized(world, method, path)
    b.n += 2
    assert len(rs) == 1 and closed, rs
    problem = judge("%s over max_body_size" % route, rs[0][0], rs[0][2], {413}, "payload_too_large")
    assert not problem, problem
    # a whole body just over the limit, sent in full, chunked
    body = json.dumps(dict(valid, pad="x" * MAX_BODY)).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                      for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
    with world.env.d.sock() as s:
        s.sendall(("%s %s HTTP/1.1\r\nHost: relay.test\r\nX-API-Key: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                   % (method, path, world.key)).encode())
        try:
            s.sendall(chunks)
        except OSError:
            pass  # refused before the end: fine
        got, closed = recv_until(s, lambda x: False, 5)
    (status, _, raw), = parse_responses(got)
    problem = judge("%s chunked over max_body_size" % route, status, raw, {413}, "payload_too_large")
    assert not problem, problem
    b.done()


def test_plugin_size_limits(world):
    """Under max_body_size but over what a plugin takes: a payload over
    [records] max_payload (256k), a push over [sync] max_batch (100), a
    `when` over 4096 bytes, strings over their lengths."""
    w = world
    b = Battery(w)
    big = {"blob": "x" * (256 * 1024)}
    b.case("create payload > max_payload", "POST", "/v1/records", {"title": "t", "type": "x", "payload": big},
           expect=(413,), code="payload_too_large")
    b.case("patch payload > max_payload", "PATCH", w.path, {"payload": big, "causal": w.rec["causal"]},
           expect=(413,), code="payload_too_large")
    item = {"op": "create", "record": {"title": "t", "type": "x"}}
    b.case("push 101 changes", "POST", "/v1/sync/push", {"changes": [item] * 101}, expect=(413,),
           code="batch_too_large")
    b.case("push payload > max_payload", "POST", "/v1/sync/push",
           {"changes": [{"op": "create", "record": {"title": "t", "type": "x", "payload": big}}]}, expect=(200,))
    b.case("policy when > 4096 bytes", "POST", "/v1/policies",
           {"name": "long", "when": "size > 1 or " * 400 + "true", "then": "drop"}, expect=(422,),
           code="policy.invalid_when")
    b.case("policy then 100k", "POST", "/v1/policies", {"name": "long", "when": "true", "then": "drop," * 25000},
           expect=(422,), code="policy.invalid_then")
    b.case("dryrun record 900k", "POST", "/v1/policies/%s/dryrun" % w.pol["id"],
           {"record": {"title": "x" * 900000}}, expect=(200,))
    b.done()


# ============================================================ field types

WRONG = {"int": 1, "float": 1.5, "true": True, "null": None, "array": [], "object": {}, "string": "s",
         "negative": -1, "zero": 0}


def invalid_values(route, field):
    """{label: value} of values FIELD of ROUTE must refuse (wrong types,
    out of range, too long, SQL and traversal strings where the field is an
    identifier or a token)."""
    def pick(*names):
        return {n: WRONG[n] for n in names}

    text_kinds = pick("int", "float", "true", "null", "array", "object")
    out = {}
    if route in ("create", "patch"):
        lengths = {"title": 200, "type": 64, "site": 64}
        if field in lengths:
            out = dict(text_kinds)
            out["empty"] = ""
            out["too long"] = "x" * (lengths[field] + 1)
            out["too long (characters)"] = "\u00e9" * (lengths[field] + 1)
            if field == "site":
                del out["null"]  # null: no site
        elif field == "status":
            out = dict(text_kinds, empty="", upper="QUEUED", other="deleted", sql=SQLI, traversal=TRAVERSAL)
        elif field == "payload":
            out = pick("int", "true", "array", "string")
            if route == "create":
                out["null"] = None
        elif field == "causal":
            out = dict(text_kinds, empty="", short="0" * 25, long="0" * 27, lower=w_lower(), sql=SQLI,
                       traversal=TRAVERSAL, bad_first="8" + "0" * 25)
        elif field == "id":
            out = dict(text_kinds, empty="", sql=SQLI2, traversal=TRAVERSAL, short="rec_" + "0" * 25,
                       prefix="REC_" + "0" * 26, letter_u="rec_" + "U" * 26, long="rec_" + "0" * 27)
    elif route == "delete" and field == "causal":
        out = pick("int", "float", "true", "null", "array", "object")
    elif route == "policy":
        if field == "name":
            out = dict(text_kinds, empty="", long="n" * 65, space="two words", sql=SQLI, traversal=TRAVERSAL,
                       unicode="r\u00e9gle")
        elif field in ("when", "then"):
            out = dict(text_kinds, empty="", sql=SQLI, traversal=TRAVERSAL)
            out["unknown field" if field == "when" else "unknown action"] = \
                "bogus > 1" if field == "when" else "explode"
        elif field == "priority":
            out = pick("float", "true", "null", "array", "object", "string", "negative")
            out.update({"over": 100001, "int64 max": 2 ** 63 - 1, "int64 min": -2 ** 63, "digits": "5"})
    elif route == "dryrun" and field == "record":
        out = pick("int", "true", "null", "array", "string")
    elif route == "push" and field == "changes":
        out = pick("int", "true", "null", "object", "string")
        out["empty"] = []
    return out


def w_lower():
    return "01" + "h" * 24


@pytest.mark.parametrize("route, fields", [
    ("create", ["id", "title", "type", "site", "status", "payload"]),
    ("patch", ["title", "type", "site", "status", "payload", "causal"]),
    ("delete", ["causal"]),
    ("policy", ["name", "when", "then", "priority"]),
    ("dryrun", ["record"]),
    ("push", ["changes"]),
])
def test_wrong_types_and_values_in_every_field(world, route, fields):
    method, path, valid = body_routes(world)[route]
    b = Battery(world)
    for field in fields:
        values = invalid_values(route, field)
        assert values, (route, field)
        for label, value in values.items():
            body = dict(valid, **{field: value})
            expect, code = (422,), None
            if route == "policy" and field in ("when", "then") and label not in WRONG:
                code = "policy.invalid_" + field
            if route == "patch" and field == "causal" and label in ("empty", "short", "long", "lower", "sql",
                                                                       "traversal", "bad_first"):
                code = "validation_failed"
            b.case("%s %s=%s" % (route, field, label), method, path, body, expect=expect, code=code)
    # unknown members
    if route in ("create", "patch", "policy"):
        for extra in ({"bogus": 1}, {"deleted": True}, {"created_at": "2020-01-01T00:00:00Z"},
                      {"version": 7}, {SQLI: 1}, {TRAVERSAL: 1}):
            if route == "create" and "id" in extra:
                continue
            b.case("%s unknown %r" % (route, list(extra)[0]), method, path, dict(valid, **extra), expect=(422,))
        if route == "patch":
            b.case("patch id", method, path, dict(valid, id=crockford_id()), expect=(422,))
    if route in ("create", "policy"):
        for field in ("title", "type") if route == "create" else ("name", "when", "then"):
            body = dict(valid)
            del body[field]
            b.case("%s without %s" % (route, field), method, path, body, expect=(422,))
    b.done()


# Each bad item of a push is answered on its own: the batch is 200, the item "invalid".
def bad_push_items(w):
    rid, causal = w.rec["id"], w.rec["causal"]
    rec = {"title": "t", "type": "x"}
    return {
        "not an object": 1,
        "array": [],
        "no op": {"record": rec},
        "op int": {"op": 1, "record": rec},
        "op upper": {"op": "CREATE", "record": rec},
        "op sql": {"op": SQLI, "record": rec},
        "op upsert": {"op": "upsert", "record": rec},
        "unknown member": {"op": "create", "record": rec, "bogus": 1},
        "sql member": {"op": "create", "record": rec, SQLI: 1},
        "key int": {"op": "create", "idempotency_key": 1, "record": rec},
        "key empty": {"op": "create", "idempotency_key": "", "record": rec},
        "key space": {"op": "create", "idempotency_key": "two words", "record": rec},
        "key sql": {"op": "create", "idempotency_key": SQLI, "record": rec},
        "key 256": {"op": "create", "idempotency_key": "k" * 256, "record": rec},
        "key non-ascii": {"op": "create", "idempotency_key": "cl\u00e9", "record": rec},
        "record array": {"op": "create", "record": []},
        "record string": {"op": "create", "record": "x"},
        "record null": {"op": "create", "record": None},
        "record bad title": {"op": "create", "record": {"title": 1, "type": "x"}},
        "record unknown": {"op": "create", "record": dict(rec, bogus=1)},
        "record sql id": {"op": "create", "record": dict(rec, id=SQLI2)},
        "update no id": {"op": "update", "causal": causal, "patch": {"title": "x"}},
        "update id int": {"op": "update", "id": 1, "causal": causal, "patch": {"title": "x"}},
        "update id sql": {"op": "update", "id": SQLI2, "causal": causal, "patch": {"title": "x"}},
        "update id traversal": {"op": "update", "id": TRAVERSAL, "causal": causal, "patch": {"title": "x"}},
        "update no causal": {"op": "update", "id": rid, "patch": {"title": "x"}},
        "update causal int": {"op": "update", "id": rid, "causal": 5, "patch": {"title": "x"}},
        "update patch array": {"op": "update", "id": rid, "causal": causal, "patch": []},
        "update patch null": {"op": "update", "id": rid, "causal": causal, "patch": None},
        "update patch id": {"op": "update", "id": rid, "causal": causal, "patch": {"id": crockford_id()}},
        "update patch bad status": {"op": "update", "id": rid, "causal": causal, "patch": {"status": SQLI}},
        "delete no id": {"op": "delete", "causal": causal},
        "delete id sql": {"op": "delete", "id": SQLI2},
        "delete id traversal": {"op": "delete", "id": TRAVERSAL},
    }


def test_push_items_with_bad_members(world):
    """Every item is answered "invalid" with a 4xx http_status and the
    error shape; nothing of the batch is stored."""
    w = world
    items = bad_push_items(w)
    b = Battery(w)
    status, _, raw = b.case("push of %d bad items" % len(items), "POST", "/v1/sync/push",
                            {"changes": list(items.values())}, expect=(200,))
    results = json.loads(raw)["results"]
    assert [r["index"] for r in results] == list(range(len(items)))
    for (label, item), r in zip(items.items(), results):
        if r["outcome"] != "invalid" or not 400 <= r["http_status"] < 500 or "error" not in r \
                or set(r["error"]) < {"code", "message"}:
            b.failures.append("push item %r: %r" % (label, r))
    # one by one too: the same answers alone
    for label, item in items.items():
        got = b.case("push item %r alone" % label, "POST", "/v1/sync/push", {"changes": [item]}, expect=(200,))
        if got and got[0] == 200:
            r = json.loads(got[2])["results"][0]
            if r["outcome"] != "invalid":
                b.failures.append("push item %r alone: %r" % (label, r))
    b.done()


# ============================================================ path segments

SEGMENTS = {"sql": q(SQLI), "sql2": q(SQLI2), "traversal (encoded)": q(TRAVERSAL), "dots": q(".."),
            "long": "x" * 5000, "unicode": q("r\u00e9c"), "unicode cut at 40 bytes": q("a" + "\u00e9" * 30),
            "invalid utf-8": "%ff%fe", "nul": "%00",
            "valid shape, unknown": "rec_" + "0" * 26, "job shape": "job_" + "0" * 26, "pol shape": "pol_x",
            "percent junk": "%zz", "semicolon": "a;b=c", "null word": "null", "star": "*"}


def path_routes(w):
    """(label, method, template with {}, body, not-found code)."""
    patch_body = {"title": "x", "causal": w.rec["causal"]}
    return [("get record", "GET", "/v1/records/{}", None, "record.not_found"),
            ("patch record", "PATCH", "/v1/records/{}", patch_body, "record.not_found"),
            ("delete record", "DELETE", "/v1/records/{}", None, "record.not_found"),
            ("delete record with causal", "DELETE", "/v1/records/{}?causal=" + w.rec["causal"], None,
             "record.not_found"),
            ("get policy", "GET", "/v1/policies/{}", None, "policy.not_found"),
            ("delete policy", "DELETE", "/v1/policies/{}", None, "policy.not_found"),
            ("dryrun", "POST", "/v1/policies/{}/dryrun", {"record": {"title": "x"}}, "policy.not_found"),
            ("retry", "POST", "/v1/sync/retry/{}", None, "job.not_found")]


@pytest.mark.parametrize("segment", list(SEGMENTS))
def test_bad_path_segments(world, segment):
    """404 with the route's not-found code (400 where the target itself is
    malformed: bad percent-encoding, NUL, invalid UTF-8)."""
    value = SEGMENTS[segment]
    b = Battery(world)
    for label, method, template, body, code in path_routes(world):
        malformed = segment in ("invalid utf-8", "nul", "percent junk")
        b.case("%s /%s" % (label, segment), method, template.format(value), body,
               expect=(400, 404) if malformed else (404,), code=None if malformed else code)
    b.done()


@pytest.mark.parametrize("path", ["/v1/records/../../etc/passwd", "/v1/records/..%2f..%2fetc%2fpasswd",
                                  "/v1/records/%2e%2e/%2e%2e/etc/passwd", "/v1/sync/retry/../../v1/records",
                                  "/v1/policies/../records", "/v1/records//", "/v1/records/a/b",
                                  "/v1/sync/retry/", "/v1/policies/x/dryrun/../../"])
def test_traversal_in_raw_paths(world, path):
    """Dot segments are not resolved into another route: 4xx (400/404/405)
    for every method."""
    b = Battery(world)
    for method, body in (("GET", None), ("POST", {"title": "t", "type": "x"}), ("PATCH", {"title": "x"}),
                         ("DELETE", None)):
        b.case("%s %s" % (method, path), method, path, body, expect=(400, 404, 405))
    b.done()


# ========================================================= query parameters

def query_cases(w):
    """(label, method, path, expected statuses, code)."""
    cursor_junk = [q(SQLI), q(TRAVERSAL), "x" * 5000, b64("[]"), b64('{"id": 1}'), b64('{"id": "x"}'),
                   b64('{"id": "rec_%s", "id": "rec_%s"}' % ("0" * 26, "0" * 26)), "%ff%fe", "!!!",
                   b64('{"id": "' + SQLI2 + '"}')]
    feed_junk = cursor_junk + [b64('{"p": -1, "s": 0, "n": "", "d": 0}'), b64('{"p": 5, "s": 1, "n": "", "d": 0}'),
                               b64('{"p": "0", "s": 0, "n": "", "d": 0}'),
                               b64('{"p": 0, "s": 0, "n": "%s", "d": 0}' % SQLI.replace('"', "")),
                               b64('{"p": 0, "s": 18446744073709551616, "n": "", "d": 0}'),
                               b64('{"p": 1e400, "s": 0, "n": "", "d": 0}')]
    limits = ["0", "-1", "abc", "1.5", "1e3", "0x10", "18446744073709551616", "99999999999999999999", "",
              q(SQLI), q(TRAVERSAL)]
    out = []
    for v in limits:
        out.append(("records limit=%s" % v[:20], "GET", "/v1/records?limit=" + v, (400,), "invalid_limit"))
        out.append(("feed limit=%s" % v[:20], "GET", "/v1/sync/changes?limit=" + v, (400,), "invalid_limit"))
        out.append(("queue limit=%s" % v[:20], "GET", "/v1/sync/queue?limit=" + v, (400,), "invalid_limit"))
    out.append(("records limit=201", "GET", "/v1/records?limit=201", (400,), "invalid_limit"))
    out.append(("feed limit=501", "GET", "/v1/sync/changes?limit=501", (400,), "invalid_limit"))
    out.append(("queue limit=501", "GET", "/v1/sync/queue?limit=501", (400,), "invalid_limit"))
    for v in cursor_junk:
        out.append(("records cursor=%s" % v[:20], "GET", "/v1/records?cursor=" + v, (400,), "invalid_cursor"))
        out.append(("queue cursor=%s" % v[:20], "GET", "/v1/sync/queue?cursor=" + v, (400,), "invalid_cursor"))
    for v in feed_junk:
        out.append(("feed since=%s" % v[:20], "GET", "/v1/sync/changes?since=" + v, (400,), "invalid_cursor"))
    for v in [q(SQLI), q(TRAVERSAL), "", "QUEUED", "x" * 5000, "%ff"]:
        out.append(("records status=%s" % v[:20], "GET", "/v1/records?status=" + v, (400,), "invalid_status"))
    for v in [q(SQLI), q(TRAVERSAL), "", "QUEUED", "x" * 5000]:
        out.append(("queue state=%s" % v[:20], "GET", "/v1/sync/queue?state=" + v, (400,), "invalid_state"))
    for v in [q(SQLI), q(TRAVERSAL), "WIFI", "x" * 33, "wi%20fi", "%ff"]:
        out.append(("feed network=%s" % v[:20], "GET", "/v1/sync/changes?network=" + v, (400,),
                    "invalid_network"))
    for v in [q(SQLI), q(TRAVERSAL), "", "now", "2024-13-01T00:00:00Z", "2024-00-10T00:00:00Z",
              "99999-01-01T00:00:00Z", "1e400", "2024-01-01", "2024-01-01T00:00:00", "-1",
              "2024-01-01T25:00:00Z", "2024-01-01T00:00:00+25:00x", "2024-01-01T00:00:00.Z"]:
        out.append(("records updated_since=%s" % v[:20], "GET", "/v1/records?updated_since=" + v, (400,),
                    "invalid_updated_since"))
    return out


def test_bad_query_parameters(world):
    b = Battery(world)
    for label, method, path, expect, code in query_cases(world):
        b.case(label, method, path, expect=expect, code=code)
    b.done()


def test_free_text_filters_match_nothing(world):
    """type= and site= take any text: SQL or traversal strings are values
    to compare, matching no record (200, empty), never code."""
    b = Battery(world)
    for field in ("type", "site"):
        for v in (SQLI, SQLI2, TRAVERSAL, "' OR 1=1 --", "%", "_", "*", "r\u00e9c"):
            got = b.case("%s=%r" % (field, v), "GET", "/v1/records?%s=%s" % (field, q(v)), expect=(200,))
            if got and got[0] == 200 and json.loads(got[2])["records"]:
                b.failures.append("%s=%r matched %r" % (field, v, json.loads(got[2])["records"]))

    b.done()


def test_malformed_query_escapes_are_refused(world):
    """%zz or %00 in a query value is a malformed request (400, as in the
    path), not a parameter left out: `status=queued%00` must not list every
    status, `cursor=%00` must not restart at the first page."""
    spare = world.env.create_record(world.key, {"title": "spare", "type": "x"}).body
    b = Battery(world)
    for path in ("/v1/records?status=queued%00", "/v1/records?status=%zz", "/v1/records?limit=%00",
                 "/v1/records?cursor=%00", "/v1/records?type=%zz", "/v1/sync/changes?since=%00",
                 "/v1/sync/changes?network=wifi%00", "/v1/sync/queue?state=%zz", "/v1/sync/queue?cursor=%00"):
        b.case(path, "GET", path)
    # (this once dropped the guard and deleted the record whatever its version)
    b.case("delete ?causal=%00", "DELETE", "/v1/records/%s?causal=%%00" % spare["id"], expect=(400, 422))
    b.done()


def test_impossible_times_are_refused(world):
    b = Battery(world)
    for v in ("2024-02-30T00:00:00Z", "2023-02-29T00:00:00Z", "2024-04-31T00:00:00Z", "+999-01-01T00:00:00Z",
              "2024-+1-01T00:00:00Z", "2024- 1-01T00:00:00Z", "2024-01-01T00:00:00+-1:00"):
        b.case("updated_since=" + v, "GET", "/v1/records?updated_since=" + q(v), code="invalid_updated_since")
    b.done()


def test_malformed_causal_is_refused_not_a_conflict(world):
    """PATCH refuses a causal that is not a token (422); DELETE (query,
    If-Match, body) and push items must too, instead of answering 409 and
    storing a record.conflict event that carries the client's string."""
    w = world
    b = Battery(w)
    for v in (SQLI, TRAVERSAL, "", "x", "0" * 27, w_lower(), '"%s"' % w.rec["causal"], "*"):
        b.case("DELETE ?causal=%r" % v, "DELETE", w.path + "?causal=" + q(v), expect=(422,), code="validation_failed")
        if v:
            b.case("DELETE If-Match %r" % v, "DELETE", w.path, headers={"If-Match": v}, expect=(422,),
                   code="validation_failed")
        b.case("DELETE body causal %r" % v, "DELETE", w.path, {"causal": v}, expect=(422,), code="validation_failed")
        for item in ({"op": "delete", "id": w.rec["id"], "causal": v},
                     {"op": "update", "id": w.rec["id"], "causal": v, "patch": {"title": "x"}}):
            got = b.case("push %s causal %r" % (item["op"], v), "POST", "/v1/sync/push", {"changes": [item]},
                         expect=(200,))
            r = json.loads(got[2])["results"][0] if got and got[0] == 200 else None
            if r and (r["outcome"] != "invalid" or r["http_status"] != 422):
                b.failures.append("push %s causal %r: %r" % (item["op"], v, r))
    b.done()


def test_record_id_that_is_not_utf8_is_404(world):
    b = Battery(world)
    for seg in ("%ff%fe", q("a" + "\u00e9" * 30), "%c0%af"):
        b.case("GET /v1/records/" + seg, "GET", "/v1/records/" + seg, expect=(404,), code="record.not_found")
    b.done()


def test_filter_text_that_is_not_utf8_is_400(world):
    """Text that is not UTF-8 was never stored: a clear 400, the same on
    both engines, not an engine's encoding error."""
    b = Battery(world)
    for field in ("type", "site"):
        for v in ("%ff%fe", "%c0%af", "a%e2%82"):
            b.case("%s=%s" % (field, v), "GET", "/v1/records?%s=%s" % (field, v), code="invalid_" + field)
    b.done()


def test_policy_id_that_is_not_utf8_is_404(world):
    b = Battery(world)
    for seg in ("%ff%fe", "%c0%af", "pol_%e2%82"):
        for method, path, body in (("GET", "/v1/policies/" + seg, None), ("DELETE", "/v1/policies/" + seg, None),
                                   ("POST", "/v1/policies/%s/dryrun" % seg, {"record": {"title": "x"}})):
            b.case("%s %s" % (method, path), method, path, body, expect=(404,), code="policy.not_found")
    b.done()


# ================================================================ headers

def test_bad_headers(world):
    """Idempotency-Key that is not 1-255 visible ASCII: 400 (on POST, PATCH
    and DELETE, with bodies that would otherwise apply); credentials that
    are SQL or traversal strings: 401."""
    w = world
    b = Battery(w)
    good = {"title": "t", "type": "x"}
    for label, value in (("empty", ""), ("256", "k" * 256), ("space", "two words"), ("sql", SQLI),
                         ("tab", "a\tb"), ("del", "a\x7fb"), ("latin-1", "cl\xe9"), ("quote", '"open'),
                         ("quoted empty", '""')):
        for method, path, body in (("POST", "/v1/records", good),
                                   ("PATCH", w.path, {"title": "x", "causal": w.rec["causal"]}),
                                   ("DELETE", w.path, None)):
            b.case("Idempotency-Key %s on %s" % (label, method), method, path, body,
                   headers={"Idempotency-Key": value}, code=("invalid_idempotency_key", "bad_request"))
    for label, key in (("sql", SQLI), ("sql2", "' OR '1'='1"), ("traversal", TRAVERSAL),
                       ("prefix sql", "rs_live_' OR 1=1 --.x"), ("long", "k" * 5000), ("empty", ""),
                       ("latin-1", "rs_live_\xff\xfe.x")):
        for method, path, body in (("GET", "/v1/records", None), ("POST", "/v1/records", good),
                                   ("POST", "/v1/sync/push", {"changes": [{"op": "create", "record": good}]}),
                                   ("GET", "/v1/sync/queue", None), ("POST", "/v1/policies",
                                                                      {"name": "n", "when": "true", "then": "drop"})):
            b.case("X-API-Key %s on %s %s" % (label, method, path), method, path, body, key=key, expect=(401,))
            b.case("Bearer %s on %s %s" % (label, method, path), method, path, body, key=None,
                   headers={"Authorization": "Bearer " + key}, expect=(401,))
    b.done()


# ======================================================= request smuggling

def smuggled(w):
    """A complete POST /v1/records of its own, to hide in a body."""
    body = json.dumps({"title": "smuggled", "type": "x"}).encode()
    return (b"POST /v1/records HTTP/1.1\r\nHost: relay.test\r\nX-API-Key: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (w.key.encode(), len(body), body))


def smuggling_cases(w):
    key = w.key.encode()
    inner = smuggled(w)
    chunked_inner = b"0\r\n\r\n" + inner

    def head(*lines):
        return (b"POST /v1/records HTTP/1.1\r\nHost: relay.test\r\nX-API-Key: " + key +
                b"\r\nContent-Type: application/json\r\n" + b"".join(l + b"\r\n" for l in lines) + b"\r\n")

    return {
        "CL.TE": head(b"Content-Length: %d" % len(chunked_inner), b"Transfer-Encoding: chunked") + chunked_inner,
        "TE.CL": head(b"Transfer-Encoding: chunked", b"Content-Length: 4") + b"5c\r\n" + inner[:92] + b"\r\n0\r\n\r\n",
        "two Content-Lengths": head(b"Content-Length: 0", b"Content-Length: %d" % len(inner)) + inner,
        "Content-Length list": head(b"Content-Length: 0, %d" % len(inner)) + inner,
        "TE chunked, identity": head(b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity") + chunked_inner,
        "TE xchunked": head(b"Transfer-Encoding: xchunked", b"Content-Length: %d" % len(chunked_inner))
        + chunked_inner,
        "TE space before colon": head(b"Transfer-Encoding : chunked", b"Content-Length: %d" % len(chunked_inner))
        + chunked_inner,
        "TE obs-fold": head(b"Transfer-Encoding: identity", b" chunked") + chunked_inner,
        "CL obs-fold": head(b"Content-Length: 0", b" %d" % len(inner)) + inner,
        "TE vertical tab": head(b"Transfer-Encoding:\x0bchunked") + chunked_inner,
        "bare CR in TE": head(b"X-Pad: a\rTransfer-Encoding: chunked") + chunked_inner,
        "bare CR line end": head(b"Content-Length: 0\rX-A: b") + inner,
        "bare LF line end": head(b"Content-Length: 0\nX-A: b") + inner,
        "chunk size overflow": head(b"Transfer-Encoding: chunked") + b"10000000000000000\r\n" + inner
        + b"\r\n0\r\n\r\n",
        "negative chunk size": head(b"Transfer-Encoding: chunked") + b"-5c\r\n" + inner + b"\r\n0\r\n\r\n",
        "chunk size junk": head(b"Transfer-Encoding: chunked") + b"5c zz\r\n" + inner[:92] + b"\r\n0\r\n\r\n",
        "Content-Length 2^64": head(b"Content-Length: 18446744073709551616") + inner,
        "Content-Length negative": head(b"Content-Length: -%d" % len(inner)) + inner,
        "Content-Length hex": head(b"Content-Length: 0x5c") + inner,
        "NUL in header": head(b"X-A: a\x00b", b"Content-Length: 0") + inner,
        "TE in HTTP/1.0": (b"POST /v1/records HTTP/1.0\r\nHost: relay.test\r\nX-API-Key: " + key +
                           b"\r\nTransfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(chunked_inner))
        + chunked_inner,
    }


@pytest.mark.parametrize("name", list(smuggling_cases(type("W", (), {"key": "k", "rec": {}})())))
def test_request_smuggling(world, name):
    """Framing that two parsers could read differently is refused (400 or
    413/501, error shape, connection closed) and the request hidden in the
    body is never run: exactly one answer, no record stored."""
    data = smuggling_cases(world)[name]
    b = Battery(world)
    b.n += 1
    with world.env.d.sock() as s:
        s.sendall(data)
        got, closed = recv_until(s, lambda x: False, 3)
    rs = parse_responses(got)
    assert rs, "no answer to %s" % name
    assert len(rs) == 1, "%s: %d answers (the hidden request ran?): %r" % (name, len(rs), [r[0] for r in rs])
    status, headers, raw = rs[0]
    problem = judge(name, status, raw, {400, 413, 501}, None)
    assert not problem, problem
    assert closed and headers.get("connection", "").lower() == "close", (name, headers)
    b.done()


def test_chunk_larger_than_max_body_is_refused_at_once(world):
    """A Content-Length over max_body_size is 413 from the head alone
    (test_oversized_bodies); a chunk size over it can never be accepted
    either and must be refused as soon as it is read."""
    with world.env.d.sock() as s:
        s.sendall(b"POST /v1/records HTTP/1.1\r\nHost: relay.test\r\nX-API-Key: " + world.key.encode() +
                  b"\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n{")
        got, closed = recv_until(s, lambda x: False, 1)
    rs = parse_responses(got)
    assert rs and rs[0][0] == 413 and closed, rs


# ============================================================ text is data

def test_text_is_data_not_code(world):
    """Free-text fields keep SQL and traversal strings verbatim and match
    only themselves; a policy `when` comparing to such a string is a
    string literal; an Idempotency-Key of SQL-looking visible ASCII is a
    key like any other.  (This test writes: it checks exactly what.)"""
    w = world
    env = w.env
    before = w.snapshot()
    t = env.new_tenant("Literal Ops")
    key = t.admin
    env.post_policy(key, "hold_everything", "true", "drop", expect=201)
    fields = {"title": SQLI, "type": TRAVERSAL, "site": "' OR 1=1 --",
              "payload": {SQLI: TRAVERSAL, "nested": {"..": ["%00", "\\..\\", "' OR '1'='1"]}}}
    idem = "x';DROP/**/TABLE/**/records_records;--/../../etc/passwd"
    r = env.create_record(key, fields, idem=idem)
    rid = r.body["id"]
    for k, v in fields.items():
        assert r.body[k] == v, (k, r.body[k])
    got = env.get_record(key, rid).body
    assert {k: got[k] for k in fields} == fields
    assert env.create_record(key, fields, idem=idem).replayed
    for field in ("title", "type", "site"):
        rows = env.list_page(key, **{field: fields[field]}).body["records"] if field != "title" else [got]
        assert [x["id"] for x in rows] == [rid], (field, rows)
    row, = env.rows("records_records", "id = " + sql_quote(rid))
    assert (row["title"], row["type"], row["site"]) == (SQLI, TRAVERSAL, "' OR 1=1 --")
    assert json.loads(row["payload"]) == fields["payload"]
    # the policy language: a string literal, compared, never run
    when = "title == \"%s\" or type == '../../etc/passwd'" % SQLI
    p = env.post_policy(key, "sql_literal", when, "queue=wifi", priority=1, expect=201).body
    assert p["when"] == when
    d = env.api("POST", "/v1/policies/%s/dryrun" % p["id"], {"record": {"title": SQLI}}, key=key)
    assert d.status == 200 and d.body["matched"] is True and d.body["action"]["queue"] == "wifi", d
    d = env.api("POST", "/v1/policies/%s/dryrun" % p["id"], {"record": {"title": "' OR 1=1 --"}}, key=key)
    assert d.status == 200 and d.body["matched"] is False, d
    env.api("DELETE", "/v1/policies/" + p["id"], key=key)
    after = w.snapshot()
    assert int(after["records"]) == int(before["records"]) + 1
    assert int(after["relay_idempotency"]) == int(before["relay_idempotency"]) + 1
    assert int(after["policies"]) == int(before["policies"]) + 2
    # the rest of the world is as it was: the target record untouched
    assert after["target.causal"] == before["target.causal"]
