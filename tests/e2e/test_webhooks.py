"""The webhooks plugin end to end, on SQLite and PostgreSQL, with a real
receiver process on loopback (webhook_receiver.py) scripted per path:

  - endpoints: create (secret shown once, stored sealed), list with
    cursors, get, patch, delete, rotate; validation errors; roles;
  - deliveries: Standard Webhooks headers and signature checked with
    Python's hmac (both signatures during a rotation's grace), the body
    {"type","timestamp","data"}, the jobs in GET /v1/sync/queue;
  - failures: 500, 500, 200 gives three receipts with one webhook-id,
    retries back off (gaps grow, Retry-After honoured), a 400 is not
    retried, dead letters after max_attempts, an endpoint disabled after
    disable_after failures and re-enabled by PATCH, a deleted endpoint's
    deliveries fail;
  - per-record order while the first event is being retried;
  - the delivery log and resend (same webhook-id);
  - a record goes "synced" only after its webhook delivery succeeded;
  - a daemon SIGKILLed while the receiver holds a delivery delivers it
    after restart;
  - the SSRF guard (a daemon without allow_private_targets): IP literals
    refused at registration, "localhost" and a redirect to loopback
    blocked at delivery;
  - tenants never see or touch each other's endpoints, logs or messages.

Tests share one daemon per engine (allow_private_targets, fast jobs) and
one receiver, and make a tenant and a receiver path each; the SSRF tests
share a second daemon per engine, the restart test starts its own."""
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from conftest import Storage, finish_all
from relaysync_support import _envs  # noqa: F401 (fixture)
from relaysync_support import rs_daemon  # noqa: F401 (fixture)
from relaysync_support import JOB_ID_RE, shared_env, sql_quote, table_rows, wait_for
from users_support import parse_time, remember

HERE = os.path.dirname(os.path.abspath(__file__))
PLUGINS = "users records policies sync webhooks"
ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
WH_ID_RE = re.compile("^wh_%s$" % ULID)
WHA_ID_RE = re.compile("^wha_%s$" % ULID)
EVT_ID_RE = re.compile("^evt_%s$" % ULID)
SECRET_RE = re.compile(r"^whsec_[A-Za-z0-9+/]{43}=$")
ENDPOINT_FIELDS = {"id", "url", "events", "description", "enabled", "status", "disabled_reason",
                   "consecutive_failures", "previous_secret_expires_at", "created_at", "updated_at"}
DELIVERY_FIELDS = {"id", "endpoint_id", "job_id", "message_id", "event_type", "attempt", "status_code", "outcome",
                   "error", "latency_ms", "response_excerpt", "created_at"}
MAX_ATTEMPTS = 4
DISABLE_AFTER = 5
EXCERPT = 64


def sections(allow_private=True, **webhooks):
    conf = {"plugins": {"load": PLUGINS},
            "jobs": {"poll_interval": "100ms", "backoff_base": "200ms", "backoff_max": "5s"},
            "webhooks": {"allow_private_targets": "true" if allow_private else "false", "rate_limit": "0",
                         "max_attempts": str(MAX_ATTEMPTS), "disable_after": str(DISABLE_AFTER),
                         "response_excerpt": str(EXCERPT), "timeout": "5s"}}
    conf["webhooks"].update(webhooks)
    return conf


# ================================================================ fixtures

class Receiver:
    """A webhook_receiver.py process on HOST: .url(path), .script(path,
    steps), .requests(path), .release(path)."""

    def __init__(self, workdir, host="127.0.0.1"):
        portfile = os.path.join(str(workdir), "receiver-%s.port" % uuid.uuid4().hex)
        self.host = host
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "webhook_receiver.py"), portfile, host])
        deadline = time.monotonic() + 10
        while not os.path.exists(portfile):
            assert self.proc.poll() is None and time.monotonic() < deadline, "the receiver did not start"
            time.sleep(0.02)
        with open(portfile) as f:
            self.port = int(f.read())

    def url(self, path):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def _ctl(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        r = urllib.request.Request(self.url(path), data=data, method=method)
        with urllib.request.urlopen(r, timeout=5) as resp:
            text = resp.read()
            return json.loads(text) if text else None

    def script(self, path, steps):
        self._ctl("POST", "/_ctl/script", {"path": path, "steps": steps})

    def requests(self, path):
        return self._ctl("GET", "/_ctl/requests?path=" + path)

    def release(self, path):
        self._ctl("POST", "/_ctl/release?path=" + path)

    def wait_requests(self, path, n, timeout=10.0):
        got = wait_for(lambda: len(self.requests(path)) >= n and self.requests(path), timeout)
        assert got, "the receiver got %d of %d requests on %s" % (len(self.requests(path)), n, path)
        return got

    def stop(self):
        self.proc.kill()
        self.proc.wait(5)


@pytest.fixture(scope="module")
def receiver(tmp_path_factory):
    r = Receiver(tmp_path_factory.mktemp("receiver"))
    yield r
    r.stop()


@pytest.fixture
def env(engine, request, _envs, tmp_path_factory):
    return shared_env(engine, request, _envs, tmp_path_factory, sections(), tag="webhooks")


@pytest.fixture(scope="module")
def _strict_envs():
    envs = {}
    yield envs
    finish_all([e.d for e in envs.values()])


@pytest.fixture
def strict(engine, request, _strict_envs, tmp_path_factory):
    """A daemon of the module on ENGINE without allow_private_targets."""
    return shared_env(engine, request, _strict_envs, tmp_path_factory, sections(allow_private=False),
                      tag="webhooks-strict")


@pytest.fixture
def path():
    return "/h/" + uuid.uuid4().hex


# ================================================================ helpers

def create(env, key, url, events=("record.created",), expect=201, **extra):
    body = {"url": url, "events": list(events)}
    body.update(extra)
    r = env.api("POST", "/v1/webhooks", body, key=key)
    assert r.status == expect, r
    if r.status == 201:
        remember(r.body["secret"])
    return r


def record(env, t, i=0, **kw):
    fields = {"title": "Pump %d" % i, "type": "inspection", "site": "alpha"}
    fields.update(kw)
    return env.create_record(t.admin, fields).body


def verify(secret, req):
    """The signatures of receipt REQ that check out with SECRET (Python's
    hmac over id.timestamp.body, Standard Webhooks)."""
    key = base64.b64decode(secret[len("whsec_"):])
    body = base64.b64decode(req["body_b64"])
    signed = ("%s.%s." % (req["headers"]["webhook-id"], req["headers"]["webhook-timestamp"])).encode() + body
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    sigs = req["headers"]["webhook-signature"].split(" ")
    assert all(s.startswith("v1,") for s in sigs), sigs
    return [i for i, s in enumerate(sigs) if hmac.compare_digest(s[3:], want)]


def deliveries(env, key, wid, expect=200, **params):
    q = "&".join("%s=%s" % kv for kv in params.items())
    r = env.api("GET", "/v1/webhooks/%s/deliveries%s" % (wid, "?" + q if q else ""), key=key)
    assert r.status == expect, r
    return r


def jobs_of(env, t, kind="webhook.deliver"):
    return [j for j in env.queue_all(t.admin) if j["kind"] == kind]


def wait_job(env, t, state, n=1, timeout=10.0):
    got = wait_for(lambda: len([j for j in jobs_of(env, t) if j["state"] == state]) >= n and jobs_of(env, t),
                   timeout)
    assert got, jobs_of(env, t)
    return got


def endpoint_row(env, wid):
    rows = env.rows("webhooks_endpoints", "id = %s" % sql_quote(wid))
    assert len(rows) == 1, rows
    return rows[0]


# ================================================================ endpoints

def test_crud_and_secret_shown_once_and_sealed(env, receiver, path):
    t = env.new_tenant()
    r = create(env, t.admin, receiver.url(path), events=["record.*", "policy.created"], description="ops")
    ep = r.body
    assert set(ep) == ENDPOINT_FIELDS | {"secret"}
    assert WH_ID_RE.match(ep["id"]) and SECRET_RE.match(ep["secret"])
    assert len(base64.b64decode(ep["secret"][6:])) == 32
    assert (ep["url"], ep["events"], ep["description"]) == (receiver.url(path), ["record.*", "policy.created"], "ops")
    assert (ep["enabled"], ep["status"], ep["disabled_reason"], ep["consecutive_failures"]) == (True, "active", None, 0)
    parse_time(ep["created_at"])
    # stored sealed: neither the secret nor its key bytes are in the row
    row = endpoint_row(env, ep["id"])
    raw = base64.b64decode(ep["secret"][6:])
    for col, value in row.items():
        text = str(value)
        assert ep["secret"] not in text and ep["secret"][6:] not in text and raw.hex() not in text, col
    assert row["secret"] and row["old_secret"] is None
    # shown only then
    got = env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin)
    assert got.status == 200 and "secret" not in got.body
    assert got.body == {k: v for k, v in ep.items() if k != "secret"}
    assert "secret" not in env.api("GET", "/v1/webhooks", key=t.admin).body["webhooks"][0]
    # list with cursors, newest first
    more = [create(env, t.admin, receiver.url(path)).body["id"] for _ in range(2)]
    page = env.api("GET", "/v1/webhooks?limit=2", key=t.admin).body
    assert [w["id"] for w in page["webhooks"]] == [more[1], more[0]] and page["next_cursor"]
    page2 = env.api("GET", "/v1/webhooks?limit=2&cursor=" + page["next_cursor"], key=t.admin).body
    assert [w["id"] for w in page2["webhooks"]] == [ep["id"]] and page2["next_cursor"] is None
    assert env.api("GET", "/v1/webhooks?cursor=nope", key=t.admin).error_code() == "invalid_cursor"
    # patch
    p = env.api("PATCH", "/v1/webhooks/" + ep["id"], {"events": ["*"], "description": None}, key=t.admin)
    assert p.status == 200, p
    assert p.body["events"] == ["*"] and p.body["description"] is None and p.body["url"] == ep["url"]
    assert "secret" not in p.body and parse_time(p.body["updated_at"]) >= parse_time(ep["updated_at"])
    p = env.api("PATCH", "/v1/webhooks/" + ep["id"], {"enabled": False}, key=t.admin)
    assert (p.body["enabled"], p.body["status"], p.body["disabled_reason"]) == (False, "disabled",
                                                                              "disabled by the user")
    p = env.api("PATCH", "/v1/webhooks/" + ep["id"], {"enabled": True}, key=t.admin)
    assert (p.body["enabled"], p.body["status"], p.body["disabled_reason"]) == (True, "active", None)
    # delete
    assert env.api("DELETE", "/v1/webhooks/" + ep["id"], key=t.admin).status == 204
    for method in ("GET", "DELETE", "PATCH"):
        r = env.api(method, "/v1/webhooks/" + ep["id"], {} if method == "PATCH" else None, key=t.admin)
        assert r.status == 404 and r.error_code() == "webhook.not_found", (method, r)
    assert env.rows("webhooks_endpoints", "id = %s" % sql_quote(ep["id"])) == []


def test_rotate_signs_with_both_secrets_during_grace(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    old_sealed = endpoint_row(env, ep["id"])["secret"]
    r = env.api("POST", "/v1/webhooks/%s/rotate" % ep["id"], key=t.admin)
    assert r.status == 200, r
    remember(r.body["secret"])
    new = r.body["secret"]
    assert SECRET_RE.match(new) and new != ep["secret"]
    assert parse_time(r.body["previous_secret_expires_at"]) > time.time() + 23 * 3600
    row = endpoint_row(env, ep["id"])
    assert row["old_secret"] == old_sealed and row["secret"] != old_sealed and new[6:] not in row["secret"]
    assert "secret" not in env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin).body
    record(env, t)
    [req] = receiver.wait_requests(path, 1)
    assert len(req["headers"]["webhook-signature"].split(" ")) == 2
    assert verify(new, req) == [0] and verify(ep["secret"], req) == [1]
    assert verify("whsec_" + base64.b64encode(os.urandom(32)).decode(), req) == []
    # a rotation with no grace left signs with the new secret alone
    env.storage.execute("UPDATE webhooks_endpoints SET old_secret_until = 1 WHERE id = %s" % sql_quote(ep["id"]))
    record(env, t, 1)
    req = receiver.wait_requests(path, 2)[1]
    assert len(req["headers"]["webhook-signature"].split(" ")) == 1 and verify(new, req) == [0]
    assert env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin).body["previous_secret_expires_at"] is None


def test_validation_errors(env, receiver):
    t = env.new_tenant()
    good = receiver.url("/h/v")

    def refused(body, field, code="validation_failed", method="POST", path="/v1/webhooks"):
        r = env.api(method, path, body, key=t.admin)
        assert r.status == 422 and r.error_code() == code, (body, r)
        if code == "validation_failed":
            assert field in [d["loc"][-1] for d in r.body["error"]["details"]], r
        return r

    refused({"events": ["*"]}, "url")
    refused({"url": good}, "events")
    refused({"url": good, "events": []}, "events")
    refused({"url": good, "events": ["x"] * 51}, "events")
    for bad in ("Record.created", "rec*", "*.x", "a..b", "", ".a", "a b", 7):
        refused({"url": good, "events": [bad]}, "events")
    for bad in ("ftp://example.com/x", "example.com/x", "http://", "http:///x", "http://exa mple.com/",
                "https://example.com/" + "a" * 2048, 17, None):
        refused({"url": bad, "events": ["*"]}, "url")
    refused({"url": good, "events": ["*"], "description": "x" * 501}, "description")
    refused({"url": good, "events": ["*"], "secret": "whsec_x"}, "secret")
    refused({"url": good, "events": ["*"], "enabled": True}, "enabled")  # PATCH only
    r = env.api("POST", "/v1/webhooks", raw=b"{nope", key=t.admin)
    assert r.status == 400 and r.error_code() == "invalid_json"
    ep = create(env, t.admin, good).body
    refused({"enabled": "yes"}, "enabled", method="PATCH", path="/v1/webhooks/" + ep["id"])
    refused({"url": "gopher://x/"}, "url", method="PATCH", path="/v1/webhooks/" + ep["id"])
    refused({"id": "wh_x"}, "id", method="PATCH", path="/v1/webhooks/" + ep["id"])
    assert env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin).body["url"] == good
    assert env.api("GET", "/v1/webhooks/wh_nope", key=t.admin).error_code() == "webhook.not_found"
    assert env.api("GET", "/v1/webhooks?limit=0", key=t.admin).error_code() == "invalid_limit"
    # [webhooks] max_endpoints
    env.storage.execute("UPDATE webhooks_endpoints SET enabled = 0 WHERE tenant = %s" % sql_quote(t.id))
    rows = [(t.id, "wh_%026d" % i) for i in range(99)]
    env.storage.execute(";".join(
        "INSERT INTO webhooks_endpoints (tenant, id, url, events, enabled, consecutive_failures, secret,"
        " created_ms, updated_ms) VALUES (%s, %s, 'http://x/', '[]', 0, 0, 'x', 0, 0)" % (sql_quote(a), sql_quote(b))
        for a, b in rows))
    r = env.api("POST", "/v1/webhooks", {"url": good, "events": ["*"]}, key=t.admin)
    assert r.status == 422 and r.error_code() == "webhook.limit", r


def test_roles(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    for key in (t.operator, t.viewer):
        assert env.api("POST", "/v1/webhooks", {"url": receiver.url(path), "events": ["*"]}, key=key).status == 403
        assert env.api("PATCH", "/v1/webhooks/" + ep["id"], {"enabled": False}, key=key).status == 403
        assert env.api("POST", "/v1/webhooks/%s/rotate" % ep["id"], key=key).status == 403
        assert env.api("DELETE", "/v1/webhooks/" + ep["id"], key=key).status == 403
    assert env.api("GET", "/v1/webhooks/" + ep["id"], key=t.operator).status == 200
    assert env.api("GET", "/v1/webhooks", key=t.viewer).status == 403
    assert env.api("GET", "/v1/webhooks").status == 401
    assert endpoint_row(env, ep["id"])["enabled"] == 1


# ================================================================ deliveries

def test_delivery_signed_with_standard_webhooks_headers(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path), events=["record.created"]).body
    before = time.time()
    rec = record(env, t)
    [req] = receiver.wait_requests(path, 1)
    h = req["headers"]
    assert req["method"] == "POST" and h["content-type"] == "application/json"
    ev = [e for e in env.event_rows(tenant=t.id) if e["type"] == "record.created"][0]
    assert h["webhook-id"] == ev["id"] and EVT_ID_RE.match(h["webhook-id"])
    assert before - 2 <= int(h["webhook-timestamp"]) <= time.time() + 1
    assert verify(ep["secret"], req) == [0]
    body = json.loads(req["body"])
    assert list(body) == ["type", "timestamp", "data"]
    assert body["type"] == "record.created" and body["data"] == rec
    assert abs(parse_time(body["timestamp"]) - parse_time(rec["created_at"])) < 1
    # the message is stored once, as sent
    msg = env.rows("webhooks_messages", "id = %s" % sql_quote(ev["id"]))
    assert [m["body"] for m in msg] == [req["body"]]
    # the job, in the org-wide queue
    [job] = wait_job(env, t, "done")
    assert JOB_ID_RE.match(job["id"]) and (job["queue"], job["target"], job["attempts"]) == ("webhooks", rec["id"], 1)
    log = deliveries(env, t.admin, ep["id"]).body["deliveries"]
    assert len(log) == 1 and set(log[0]) == DELIVERY_FIELDS
    assert (log[0]["outcome"], log[0]["status_code"], log[0]["attempt"], log[0]["job_id"], log[0]["message_id"],
            log[0]["event_type"]) == ("delivered", 200, 1, job["id"], ev["id"], "record.created")
    # no other event type reached it
    time.sleep(0.3)
    assert len(receiver.requests(path)) == 1


def test_500_500_200_three_receipts_same_webhook_id(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    receiver.script(path, ["500", "500", "200"])
    record(env, t)
    reqs = receiver.wait_requests(path, 3)
    wait_job(env, t, "done")
    time.sleep(0.5)
    reqs = receiver.requests(path)
    assert len(reqs) == 3
    assert len({r["headers"]["webhook-id"] for r in reqs}) == 1 and len({r["body"] for r in reqs}) == 1
    assert all(verify(ep["secret"], r) == [0] for r in reqs)
    [job] = jobs_of(env, t)
    assert (job["state"], job["attempts"], job["last_error"]) == ("done", 3, None)
    log = deliveries(env, t.admin, ep["id"]).body["deliveries"]
    assert [(d["attempt"], d["outcome"], d["status_code"]) for d in log] == [
        (3, "delivered", 200), (2, "retrying", 500), (1, "retrying", 500)]
    assert "500" in log[1]["error"]
    assert env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin).body["consecutive_failures"] == 0


def test_retries_back_off_and_honour_retry_after(env, receiver, path):
    t = env.new_tenant()
    create(env, t.admin, receiver.url(path))
    receiver.script(path, ["503", "503", "503", "200"])
    record(env, t)
    reqs = receiver.wait_requests(path, 4)
    gaps = [b["t"] - a["t"] for a, b in zip(reqs, reqs[1:])]
    # backoff_base 200ms doubling, half of it jitter, polled every 100ms
    assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39, gaps
    assert gaps[2] > gaps[0], gaps
    # Retry-After: 1 waits a second where the backoff would wait 0.1-0.2 s
    p2 = path + "-ra"
    t2 = env.new_tenant()
    create(env, t2.admin, receiver.url(p2))
    receiver.script(p2, [{"status": 429, "headers": {"Retry-After": "1"}}, "200"])
    record(env, t2)
    a, b = receiver.wait_requests(p2, 2)
    assert 0.95 <= b["t"] - a["t"] < 3, b["t"] - a["t"]


def test_4xx_is_not_retried(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    receiver.script(path, [{"status": 400, "body": "bad payload"}, "200"])
    record(env, t)
    [job] = wait_job(env, t, "dead")
    time.sleep(0.5)
    assert len(receiver.requests(path)) == 1
    job = jobs_of(env, t)[0]
    assert job["attempts"] == 1 and "400" in job["last_error"], job
    [d] = deliveries(env, t.admin, ep["id"]).body["deliveries"]
    assert (d["outcome"], d["status_code"], d["response_excerpt"]) == ("failed", 400, "bad payload")


def test_deliveries_reuse_the_connection(env, receiver, path):
    """Deliveries to one receiver ride one kept-alive connection (a pool
    per guard setting keeps this safe: see the kept-alive SSRF test)."""
    t = env.new_tenant()
    create(env, t.admin, receiver.url(path))
    for i in range(3):  # one after the other: each waits for the one before to be done
        record(env, t, i)
        wait_job(env, t, "done", n=i + 1)
    assert len({r["peer_port"] for r in receiver.requests(path)}) == 1, receiver.requests(path)


def test_redirect_loop_fails_without_retry(env, receiver, path):
    """A receiver that keeps redirecting (past [webhooks] max_redirects, 3)
    gives a 3xx as its answer: failed for good, like any other refusal."""
    t = env.new_tenant()
    create(env, t.admin, receiver.url(path))
    receiver.script(path, [{"status": 307, "headers": {"Location": receiver.url(path)}}])
    record(env, t)
    [job] = wait_job(env, t, "dead")
    assert job["attempts"] == 1, job
    assert "redirect" in job["last_error"].lower(), job
    assert len(receiver.requests(path)) == 4  # the first request and three redirects, once


def test_dead_letter_after_max_attempts(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    receiver.script(path, [{"status": 500, "body": "x" * 500}])
    record(env, t)
    wait_job(env, t, "dead")
    [job] = env.queue(t.admin, state="dead").body["jobs"]
    assert (job["kind"], job["attempts"], job["max_attempts"]) == ("webhook.deliver", MAX_ATTEMPTS, MAX_ATTEMPTS)
    assert "HTTP 500" in job["last_error"]
    assert len(receiver.requests(path)) == MAX_ATTEMPTS
    log = deliveries(env, t.admin, ep["id"]).body["deliveries"]
    assert [d["outcome"] for d in log] == ["dead"] + ["retrying"] * (MAX_ATTEMPTS - 1)
    assert all(d["status_code"] == 500 and d["latency_ms"] >= 0 for d in log)
    assert all(d["response_excerpt"] == "x" * EXCERPT for d in log)  # [webhooks] response_excerpt
    got = env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin).body
    assert (got["consecutive_failures"], got["status"]) == (MAX_ATTEMPTS, "active")
    # its order row is gone: nothing waits behind a dead letter
    assert env.rows("webhooks_pending", "job_id = %s" % sql_quote(job["id"])) == []
    # a retry of the dead letter from the queue delivers it
    receiver.script(path, ["200"])
    env.retry(t.admin, job["id"])
    wait_job(env, t, "done")
    assert len(receiver.requests(path)) == MAX_ATTEMPTS + 1


def test_disabled_after_failures_then_reenabled(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    receiver.script(path, ["500"])
    for i in range(3):
        record(env, t, i)
    got = wait_for(lambda: env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin).body["status"] == "disabled" and
                   env.api("GET", "/v1/webhooks/" + ep["id"], key=t.admin).body, 10)
    assert got and not got["enabled"] and "%d consecutive failed" % DISABLE_AFTER in got["disabled_reason"], got
    jobs = wait_for(lambda: all(j["state"] == "dead" for j in jobs_of(env, t)) and jobs_of(env, t), 10)
    assert jobs and len(jobs) == 3, jobs_of(env, t)
    # attempts already in flight when it tipped over may still fail, none starts after
    sent = len(receiver.requests(path))
    assert DISABLE_AFTER <= sent <= DISABLE_AFTER + 2, sent
    assert endpoint_row(env, ep["id"])["consecutive_failures"] == sent
    assert any("disabled" in j["last_error"] for j in jobs), jobs
    [ev] = env.event_rows(tenant=t.id, type="webhook.endpoint.disabled")
    assert ev["payload"]["id"] == ep["id"] and ev["payload"]["consecutive_failures"] == DISABLE_AFTER
    # no fan-out to a disabled endpoint
    record(env, t, 9)
    time.sleep(0.4)
    assert len(jobs_of(env, t)) == 3
    # re-enabled: failures forgotten, new events flow
    receiver.script(path, ["200"])
    p = env.api("PATCH", "/v1/webhooks/" + ep["id"], {"enabled": True}, key=t.admin)
    assert (p.body["status"], p.body["consecutive_failures"], p.body["disabled_reason"]) == ("active", 0, None)
    rec = record(env, t, 10)
    req = receiver.wait_requests(path, sent + 1)[-1]
    assert json.loads(req["body"])["data"]["id"] == rec["id"]


def test_deleted_endpoint_fails_its_pending_deliveries(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    receiver.script(path, [{"status": 503, "headers": {"Retry-After": "1"}}])
    record(env, t)
    receiver.wait_requests(path, 1)
    assert env.api("DELETE", "/v1/webhooks/" + ep["id"], key=t.admin).status == 204
    [job] = wait_job(env, t, "dead")
    assert job["last_error"] == "endpoint deleted" and len(receiver.requests(path)) == 1
    assert env.rows("webhooks_attempts", "endpoint_id = %s" % sql_quote(ep["id"])) == []


# ================================================================ order

def test_events_of_a_record_arrive_in_commit_order(env, receiver, path):
    t = env.new_tenant()
    create(env, t.admin, receiver.url(path), events=["record.created", "record.updated"])
    receiver.script(path, ["500", "500", "200"])
    rec = record(env, t)
    upd = env.patch_record(t.admin, rec["id"], {"title": "Pump 0 (checked)"}, causal=rec["causal"]).body
    reqs = receiver.wait_requests(path, 4)
    jobs = wait_job(env, t, "done", 2)
    time.sleep(0.3)
    reqs = receiver.requests(path)
    seen = [(json.loads(r["body"])["type"], json.loads(r["body"])["data"]["id"]) for r in reqs]
    assert seen == [("record.created", rec["id"])] * 3 + [("record.updated", rec["id"])], seen
    assert json.loads(reqs[-1]["body"])["data"]["causal"] == upd["causal"]
    # while it waited, the update's job was deferred: no attempt counted
    assert sorted(j["attempts"] for j in jobs) == [1, 3]


# ================================================================ log and resend

def test_delivery_log_pages_and_resend(env, receiver, path):
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    receiver.script(path, [{"status": 500, "body": "down \xe9"}, {"status": 200, "body": "thanks"}])
    record(env, t)
    receiver.wait_requests(path, 2)
    wait_job(env, t, "done")
    log = deliveries(env, t.admin, ep["id"]).body
    assert [(d["outcome"], d["response_excerpt"]) for d in log["deliveries"]] == [("delivered", "thanks"),
                                                                                 ("retrying", "down \xe9")]
    assert log["next_cursor"] is None and all(WHA_ID_RE.match(d["id"]) for d in log["deliveries"])
    p1 = deliveries(env, t.admin, ep["id"], limit=1).body
    p2 = deliveries(env, t.admin, ep["id"], limit=1, cursor=p1["next_cursor"]).body
    assert [d["id"] for d in p1["deliveries"] + p2["deliveries"]] == [d["id"] for d in log["deliveries"]]
    assert p2["next_cursor"] is None
    msg = log["deliveries"][0]["message_id"]
    assert len(deliveries(env, t.admin, ep["id"], message=msg).body["deliveries"]) == 2
    other = "evt_" + "0" * 26
    assert deliveries(env, t.admin, ep["id"], message=other).body["deliveries"] == []
    assert deliveries(env, t.admin, ep["id"], expect=400, message="x").error_code() == "invalid_message"
    assert deliveries(env, t.admin, ep["id"], expect=400, cursor="zz").error_code() == "invalid_cursor"
    # resend: a new job, the same webhook-id and body
    r = env.api("POST", "/v1/webhooks/%s/resend" % ep["id"], {"message_id": msg}, key=t.admin)
    assert r.status == 202, r
    job = r.body["job"]
    assert JOB_ID_RE.match(job["id"]) and (job["kind"], job["queue"], job["state"]) == ("webhook.deliver",
                                                                                       "webhooks", "queued")
    reqs = receiver.wait_requests(path, 3)
    assert reqs[2]["headers"]["webhook-id"] == msg and reqs[2]["body"] == reqs[0]["body"]
    assert verify(ep["secret"], reqs[2]) == [0]
    wait_job(env, t, "done", 2)
    assert [d["job_id"] for d in deliveries(env, t.admin, ep["id"]).body["deliveries"]][0] == job["id"]
    # refusals
    r = env.api("POST", "/v1/webhooks/%s/resend" % ep["id"], {"message_id": other}, key=t.admin)
    assert r.status == 404 and r.error_code() == "webhook.message_not_found"
    r = env.api("POST", "/v1/webhooks/%s/resend" % ep["id"], {}, key=t.admin)
    assert r.status == 422
    assert env.api("POST", "/v1/webhooks/%s/resend" % ep["id"], {"message_id": msg}, key=t.viewer).status == 403
    env.api("PATCH", "/v1/webhooks/" + ep["id"], {"enabled": False}, key=t.admin)
    r = env.api("POST", "/v1/webhooks/%s/resend" % ep["id"], {"message_id": msg}, key=t.admin)
    assert r.status == 409 and r.error_code() == "webhook.disabled"


# ================================================================ sync

def test_record_synced_only_after_its_webhook_succeeded(env, receiver, path):
    t = env.new_tenant()
    create(env, t.admin, receiver.url(path))
    receiver.script(path, ["500", {"hold": True, "status": 200}])
    rec = record(env, t, status="queued")
    receiver.wait_requests(path, 2)  # failed once, the second attempt held by the receiver
    deadline = time.monotonic() + 1.5  # longer than the sync job's 1 s wait
    while time.monotonic() < deadline:
        assert env.get_record(t.admin, rec["id"]).body["status"] == "queued"
        time.sleep(0.1)
    receiver.release(path)
    got = wait_for(lambda: env.get_record(t.admin, rec["id"]).body["status"] == "synced", 5)
    assert got, env.get_record(t.admin, rec["id"]).body
    sync_job = [j for j in env.queue_all(t.admin) if j["kind"] == "record.sync"][0]
    hook_job = jobs_of(env, t)[0]
    assert hook_job["state"] == "done" and parse_time(sync_job["updated_at"]) >= parse_time(hook_job["updated_at"])


# ================================================================ isolation

def test_tenants_are_isolated_on_every_route(env, receiver, path):
    a, b = env.new_tenant("A"), env.new_tenant("B")
    ep = create(env, a.admin, receiver.url(path)).body
    mine = create(env, b.admin, receiver.url(path + "-b")).body
    record(env, a)
    receiver.wait_requests(path, 1)
    wait_job(env, a, "done")
    msg = deliveries(env, a.admin, ep["id"]).body["deliveries"][0]["message_id"]
    wid = ep["id"]
    for method, route, body in (("GET", "/v1/webhooks/" + wid, None),
                                ("PATCH", "/v1/webhooks/" + wid, {"enabled": False}),
                                ("DELETE", "/v1/webhooks/" + wid, None),
                                ("POST", "/v1/webhooks/%s/rotate" % wid, None),
                                ("GET", "/v1/webhooks/%s/deliveries" % wid, None),
                                ("POST", "/v1/webhooks/%s/resend" % wid, {"message_id": msg})):
        r = env.api(method, route, body, key=b.admin)
        assert r.status == 404 and r.error_code() == "webhook.not_found", (method, route, r)
    assert [w["id"] for w in env.api("GET", "/v1/webhooks", key=b.admin).body["webhooks"]] == [mine["id"]]
    r = env.api("POST", "/v1/webhooks/%s/resend" % mine["id"], {"message_id": msg}, key=b.admin)
    assert r.status == 404 and r.error_code() == "webhook.message_not_found"
    assert jobs_of(env, b) == []
    got = env.api("GET", "/v1/webhooks/" + wid, key=a.admin).body
    assert got["enabled"] and got["url"] == ep["url"]
    assert endpoint_row(env, wid)["secret"] and len(deliveries(env, a.admin, wid).body["deliveries"]) == 1
    assert len(receiver.requests(path)) == 1 and receiver.requests(path + "-b") == []


def test_old_messages_and_log_are_purged(rs_daemon, receiver, path):
    """[webhooks] keep_messages: past it a message can no longer be re-sent
    and its delivery log rows are gone."""
    env = rs_daemon(sections(keep_messages="2s"))
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    record(env, t)
    [req] = receiver.wait_requests(path, 1)
    msg = req["headers"]["webhook-id"]
    env.wait_for(lambda: len(deliveries(env, t.admin, ep["id"]).body["deliveries"]) == 1)
    env.wait_for(lambda: deliveries(env, t.admin, ep["id"]).body["deliveries"] == [], timeout=6)
    r = env.api("POST", "/v1/webhooks/%s/resend" % ep["id"], {"message_id": msg}, key=t.admin)
    assert r.status == 404 and r.error_code() == "webhook.message_not_found", r
    assert int(env.storage.scalar("SELECT COUNT(*) FROM webhooks_messages WHERE id = '%s'" % msg)) == 0


def test_two_daemons_on_one_database_deliver_each_event_once(engine, rs_daemon, receiver, path, tmp_path):
    """Many daemons on one PostgreSQL database (sharing secret_key_file, as
    documented): each daemon's outbox subscriber sees every event, and
    exactly one of them queues its deliveries (the message row and the
    jobs commit together)."""
    if engine != "pgsql":
        pytest.skip("several daemons share a database on PostgreSQL")
    key_file = str(tmp_path / "shared-webhooks.key")
    one = rs_daemon(sections(secret_key_file=key_file))
    two = rs_daemon(sections(secret_key_file=key_file))
    t = one.new_tenant()
    create(one, t.admin, receiver.url(path))
    ids = [record(one if i % 2 else two, t, i)["id"] for i in range(6)]
    receiver.wait_requests(path, 6, timeout=15)
    time.sleep(1.0)  # both daemons' dispatchers have run several times since
    reqs = receiver.requests(path)
    assert sorted(json.loads(r["body"])["data"]["id"] for r in reqs) == sorted(ids)
    assert len({r["headers"]["webhook-id"] for r in reqs}) == 6
    assert len(jobs_of(one, t)) == 6


# ================================================================ restart

def test_sigkill_mid_delivery_loses_nothing(rs_daemon, receiver, path):
    env = rs_daemon(sections(**{"max_attempts": "8"}) | {"jobs": {"poll_interval": "100ms", "lease": "1500ms",
                                                                   "backoff_base": "200ms"}})
    t = env.new_tenant()
    ep = create(env, t.admin, receiver.url(path)).body
    receiver.script(path, [{"hold": True, "status": 200}, "200"])
    rec = record(env, t)
    receiver.wait_requests(path, 1)
    env.d.kill()
    receiver.release(path)
    env.d.start()
    reqs = receiver.wait_requests(path, 2, timeout=15)
    assert {r["headers"]["webhook-id"] for r in reqs} == {reqs[0]["headers"]["webhook-id"]}
    assert json.loads(reqs[-1]["body"])["data"]["id"] == rec["id"] and verify(ep["secret"], reqs[-1]) == [0]
    [job] = wait_job(env, t, "done", timeout=10)
    assert job["attempts"] == 2
    log = deliveries(env, t.admin, ep["id"]).body["deliveries"]
    assert [d["outcome"] for d in log] == ["delivered"]


# ================================================================ SSRF

def test_ssrf_ip_literals_refused_at_registration(strict, receiver):
    t = strict.new_tenant()
    for url in ("http://127.0.0.1:%d/h" % receiver.port, "http://[::1]/h", "http://10.1.2.3/", "http://169.254.169.254/",
                "http://2130706433/", "http://0x7f.1/", "https://[fe80::1]/", "http://192.168.0.1:8080/x",
                "http://[::ffff:127.0.0.1]/"):
        r = strict.api("POST", "/v1/webhooks", {"url": url, "events": ["*"]}, key=t.admin)
        assert r.status == 422 and r.error_code() == "webhook.private_target", (url, r)
    ep = create(strict, t.admin, "https://93.184.216.34/hook").body
    r = strict.api("PATCH", "/v1/webhooks/" + ep["id"], {"url": "http://127.0.0.1/"}, key=t.admin)
    assert r.status == 422 and r.error_code() == "webhook.private_target"
    assert strict.rows("webhooks_endpoints", "tenant = %s" % sql_quote(t.id))[0]["url"] == "https://93.184.216.34/hook"


def test_ssrf_loopback_hostname_blocked_at_delivery(strict, receiver, path):
    t = strict.new_tenant()
    ep = create(strict, t.admin, "http://localhost:%d%s" % (receiver.port, path)).body
    record(strict, t)
    [job] = wait_job(strict, t, "dead")
    assert job["attempts"] == 1 and "private or loopback" in job["last_error"], job
    [d] = deliveries(strict, t.admin, ep["id"]).body["deliveries"]
    assert d["outcome"] == "failed" and d["status_code"] is None and "not allowed" in d["error"]
    assert receiver.requests(path) == []


def _public_looking_address():
    """A non-loopback address of this machine the SSRF guard lets through
    (192.0.2.2 in the test VM), or None."""
    import socket
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect(("192.0.2.1", 9))  # no packet: picks the outgoing interface
        ip = s.getsockname()[0]
        s.close()
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


def test_ssrf_redirect_to_loopback_blocked(strict, receiver, path, tmp_path):
    ip = _public_looking_address()
    if not ip:
        pytest.skip("no non-loopback IPv4 address")
    t = strict.new_tenant()
    r = strict.api("POST", "/v1/webhooks", {"url": "http://%s:1/x" % ip, "events": ["*"]}, key=t.admin)
    if r.status == 422:
        pytest.skip("this machine's address %s is private: no first hop the guard lets through" % ip)
    assert r.status == 201, r
    assert strict.api("DELETE", "/v1/webhooks/" + r.body["id"], key=t.admin).status == 204
    outer = Receiver(tmp_path, host=ip)
    try:
        ep = create(strict, t.admin, outer.url(path)).body
        outer.script(path, [{"status": 307, "headers": {"Location": receiver.url(path)}}])
        record(strict, t)
        [job] = wait_job(strict, t, "dead")
        assert len(outer.requests(path)) == 1 and receiver.requests(path) == []
        assert "private or loopback" in job["last_error"] and job["attempts"] == 1, job
        [d] = deliveries(strict, t.admin, ep["id"]).body["deliveries"]
        assert d["outcome"] == "failed" and "127.0.0.1" in d["error"]
    finally:
        outer.stop()


def test_ssrf_guard_not_bypassed_by_a_kept_alive_connection(rs_daemon, receiver, path):
    """A connection opened while private targets were allowed must not
    carry a delivery after a reload that forbids them (curl keeps
    connections for reuse, and a reused one never meets the guard)."""
    env = rs_daemon(sections())
    t = env.new_tenant()
    ep = create(env, t.admin, "http://localhost:%d%s" % (receiver.port, path)).body
    record(env, t)
    receiver.wait_requests(path, 1)
    wait_job(env, t, "done")
    env.d.sections["webhooks"]["allow_private_targets"] = "false"
    env.d.write_config()
    env.d.send_signal(signal.SIGHUP)
    env.d.wait_log("reload")
    time.sleep(0.3)
    record(env, t, 1)
    jobs = wait_for(lambda: [j for j in jobs_of(env, t) if j["state"] in ("done", "dead")][1:] and jobs_of(env, t), 10)
    assert jobs, jobs_of(env, t)
    assert len(receiver.requests(path)) == 1, "delivered to loopback after allow_private_targets was turned off"
    assert deliveries(env, t.admin, ep["id"]).body["deliveries"][0]["outcome"] == "failed"
