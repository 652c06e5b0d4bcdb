"""Helpers for the users plugin's end-to-end tests (test_users.py and
test_users_limits.py): a daemon that loads `users` from the build tree's
plugins/ folder on the engine under test, relayctl with the daemon's own
configuration, and the plugin's HTTP routes with credentials.

Every secret a test is shown (API keys, bearer tokens, invitation tokens)
and every log a daemon or relayctl writes is remembered here, so that the
last test of test_users_limits.py can check that none of them leaked."""
import base64
import datetime
import hashlib
import http.client
import json
import os
import re
import threading
import time

from conftest import TOP_BUILDDIR, run_relayctl

USERS_PLUGIN_DIR = os.path.join(TOP_BUILDDIR, "plugins")

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
KEY_ID_RE = re.compile("^%s$" % ULID)
TENANT_RE = re.compile("^ten_%s$" % ULID)
USER_RE = re.compile("^usr_%s$" % ULID)
INVITE_RE = re.compile("^inv_%s$" % ULID)
SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # 32 bytes, base64url without padding
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z$")

# --------------------------------------------------------- what must not leak

SECRETS = set()    # every credential a test saw (full texts and their secret parts)
LOG_PATHS = set()  # daemon stderr/stdout files
CTL_STDERR = []    # relayctl's stderr, every run


def remember(value):
    """Notes a credential the daemon or relayctl handed out."""
    if not isinstance(value, str) or len(value) < 16:
        return
    SECRETS.add(value)
    if value.startswith("rtk1."):
        SECRETS.add(value.rsplit(".", 1)[1])   # the MAC
    elif "." in value:
        SECRETS.add(value.rsplit(".", 1)[1])   # an API key's secret


def remember_in(doc):
    """Notes every credential-bearing field of a JSON reply or CLI output."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k in ("api_key", "token") and isinstance(v, str):
                remember(v)
            else:
                remember_in(v)
    elif isinstance(doc, list):
        for v in doc:
            remember_in(v)


def watch_daemon(d):
    LOG_PATHS.add(d.stderr_path)
    LOG_PATHS.add(d.stdout_path)
    return d


# ------------------------------------------------------------------ formats

def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def token_claims(token):
    tag, claims, mac = token.split(".")
    assert tag == "rtk1"
    return json.loads(b64url_decode(claims))


def key_parts(api_key, prefix="rs_live_"):
    """(key id, secret) of PREFIX KEY_ID . SECRET."""
    assert api_key.startswith(prefix), api_key
    kid, dot, secret = api_key[len(prefix):].partition(".")
    assert dot and KEY_ID_RE.match(kid) and SECRET_RE.match(secret), api_key
    assert len(b64url_decode(secret)) == 32
    return kid, secret


def blake2b_hex(text):
    return hashlib.blake2b(text.encode(), digest_size=32).hexdigest()


def rfc3339(offset_s=0.0):
    """UTC now + OFFSET_S as RFC 3339 with milliseconds."""
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def parse_time(text):
    assert TIME_RE.match(text), text
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in text else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.datetime.strptime(text, fmt).replace(tzinfo=datetime.timezone.utc).timestamp()


def random_key_id():
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    return "".join(alphabet[b % 32] for b in os.urandom(26))


def random_secret():
    return b64url(os.urandom(32))


def asan_build():
    """True when the tree was configured with --enable-sanitizers."""
    try:
        with open(os.path.join(TOP_BUILDDIR, "Makefile")) as f:
            return any(line.startswith("SAN_CFLAGS =") and "-fsanitize" in line for line in f)
    except OSError:
        return False


# --------------------------------------------------------------- the daemon

def users_sections(storage, sections=None):
    """A daemon with only the users plugin on STORAGE; revocations by other
    processes are polled every 100 ms; the per-address `auth` class is
    opened wide so tests sharing 127.0.0.1 do not throttle each other
    (tests of that limit set it back)."""
    conf = {"plugins": {"dir": USERS_PLUGIN_DIR, "load": "users"},
            "storage": storage.config(),
            "events": {"poll_interval": "100ms"},
            "users": {"rate_limit.auth": "100000"}}
    for section, keys in (sections or {}).items():
        conf.setdefault(section, {}).update(keys)
    return conf


def users_daemon_factory(make_daemon, storage):
    """For the tests' `users_daemon` fixture: a factory of daemons of one's
    own on the test's fresh database: factory({section: {key: value}},
    workers=...) -> Users."""
    def factory(sections=None, **kw):
        d = make_daemon(sections=users_sections(storage, sections), start=False, **kw)
        u = Users(d, storage)
        d.start()
        return u
    return factory


def headers_for(cred, how="x-api-key"):
    if cred is None:
        return {}
    if how == "x-api-key":
        return {"X-API-Key": cred}
    if how == "bearer":
        return {"Authorization": "Bearer " + cred}
    raise ValueError(how)


class Users:
    """A running daemon with the users plugin, its database, and relayctl."""

    def __init__(self, daemon, storage):
        self.d = watch_daemon(daemon)
        self.storage = storage

    # -- relayctl

    def ctl_raw(self, *args, overrides=()):
        rc, out, err = run_relayctl(self.d.conf_path, *args, overrides=overrides)
        CTL_STDERR.append(err)
        for line in out.splitlines():
            try:
                remember_in(json.loads(line))
            except ValueError:
                pass
        return rc, out, err

    def ctl(self, *args, overrides=()):
        """relayctl ARGS that must succeed: its JSON output."""
        rc, out, err = self.ctl_raw(*args, overrides=overrides)
        assert rc == 0, (args, rc, out, err)
        return json.loads(out)

    def tenant(self, name="Acme Field Ops", overrides=()):
        return self.ctl("tenant", "create", name, overrides=overrides)

    def key(self, tenant, role=None, scopes=None, name=None, user=None, expires=None, overrides=()):
        args = ["key", "create", "--tenant", tenant]
        for flag, value in (("--role", role), ("--scopes", scopes), ("--name", name), ("--user", user),
                            ("--expires", expires)):
            if value is not None:
                args += [flag, value]
        return self.ctl(*args, overrides=overrides)

    def keys(self, tenant):
        return self.ctl("key", "list", "--tenant", tenant)

    def user_list(self, tenant):
        return self.ctl("user", "list", "--tenant", tenant)

    # -- HTTP

    def api(self, method, path, body=None, cred=None, how="x-api-key", headers=None, raw=None):
        """(status, headers, parsed JSON or None).  BODY dict/list is sent as
        JSON; RAW bytes as they are."""
        h = headers_for(cred, how)
        h.update(headers or {})
        if raw is not None:
            h.setdefault("Content-Type", "application/json")
            status, hdrs, data = self.d.request(method, path, body=raw, headers=h)
        else:
            status, hdrs, data = self.d.request(method, path, body=body, headers=h)
        doc = json.loads(data) if data else None
        remember_in(doc)
        return status, hdrs, doc

    def status(self, method, path, cred=None, how="x-api-key", body=None):
        return self.api(method, path, body=body, cred=cred, how=how)[0]

    def token(self, api_key):
        status, hdrs, body = self.api("POST", "/v1/auth/token", {"api_key": api_key})
        assert status == 200, body
        return body["token"]

    def users(self, cred, query="", how="x-api-key"):
        status, _, body = self.api("GET", "/v1/users" + query, cred=cred, how=how)
        assert status == 200, body
        return body

    def invite(self, cred, email, role="viewer", how="x-api-key"):
        status, _, body = self.api("POST", "/v1/users/invite", {"email": email, "role": role}, cred=cred, how=how)
        assert status == 201, body
        return body["invite"]

    def accept(self, invite_token):
        status, _, body = self.api("POST", "/v1/users/invite/accept", {"token": invite_token})
        assert status == 201, body
        return body

    def add_user(self, admin_cred, email, role="viewer"):
        """Invites EMAIL and accepts: the accept reply (user, api_key, key_id)."""
        return self.accept(self.invite(admin_cred, email, role)["token"])


# ---------------------------------------------------------------- workers

def worker_of(hdrs):
    """Which worker thread answered: X-Request-Id starts with the worker's
    random prefix and its index (10 hex digits, core/request.c)."""
    return hdrs.get("x-request-id", "")[:10]


def workers_of(u):
    return int(u.d.sections["server"].get("workers", "2"))


def answers_per_worker(u, cred, how, tries=300, path="/v1/users"):
    """GET PATH with CRED on fresh connections until every worker answered:
    {worker: [statuses]}."""
    seen = {}
    for _ in range(tries):
        status, hdrs, _ = u.api("GET", path, cred=cred, how=how)
        seen.setdefault(worker_of(hdrs), []).append(status)
        if len(seen) >= workers_of(u):
            break
    assert len(seen) == workers_of(u), "only workers %s answered in %d tries" % (sorted(seen), tries)
    return seen


# ------------------------------------------------------------------- load

def hammer(d, n, conns, headers, path="/v1/users", method="GET", body=None, source=None):
    """Sends N requests from CONNS concurrent keep-alive connections as fast
    as they go (HEADERS: a dict, or a list used in turn, request by request).
    Returns ([(status, headers, body)], elapsed seconds from the first send
    to the last reply)."""
    header_sets = headers if isinstance(headers, list) else [headers]
    lock = threading.Lock()
    left = [n]
    results = []
    errors = []
    start = threading.Barrier(conns + 1, timeout=10)

    def worker():
        kw = {"source_address": (source, 0)} if source else {}
        conn = http.client.HTTPConnection(d.host, d.port, timeout=10, **kw)
        try:
            conn.connect()
            start.wait()
            while True:
                with lock:
                    if left[0] == 0:
                        return
                    left[0] -= 1
                    h = header_sets[left[0] % len(header_sets)]
                conn.request(method, path, body=body, headers=h)
                r = conn.getresponse()
                data = r.read()
                with lock:
                    results.append((r.status, {k.lower(): v for k, v in r.getheaders()}, data))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection(d.host, d.port, timeout=10, **kw)
        except Exception as e:  # reported by the caller
            errors.append(repr(e))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(conns)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.monotonic()
    for t in threads:
        t.join(30)
    elapsed = time.monotonic() - t0
    assert not errors, errors
    assert len(results) == n, (len(results), n)
    return results, elapsed
