"""Helpers for the RelaySync end-to-end tests (test_records.py,
test_policies.py, test_sync.py): a daemon that loads `users records
policies sync` from the build tree's plugins/ folder on the engine under
test, tenants and API keys made with relayctl, the product's HTTP routes
with credentials, and the plugins' tables read straight from the
database.

Built on users_support.py (Users: relayctl, `api()`, the secrets every
test saw).  Daemons poll events and jobs every 100 ms and every plugin's
per-tenant rate limit is opened wide (0 = unlimited) unless a test sets
it.

A module that shares one daemon per engine imports the `_envs` fixture
from here and writes:

    @pytest.fixture
    def env(engine, request, _envs, tmp_path_factory):
        return shared_env(engine, request, _envs, tmp_path_factory)

and a test that needs settings of its own uses the `rs_daemon` fixture
(import it too): rs_daemon({section: {key: value}}) -> RelaySync.

    def test_x(rs_daemon):
        env = rs_daemon({"records": {"idempotency_ttl": "1s"}})
"""
import atexit
import collections
import json
import os
import re
import urllib.parse

import pytest

from conftest import Daemon, Storage, finish_all
from conftest import wait_for as _wait_for
from users_support import USERS_PLUGIN_DIR, Users, users_sections

PLUGINS = "users records policies sync"
PLUGINS_DIR = USERS_PLUGIN_DIR

ULID = r"[0-9A-HJKMNP-TV-Z]{26}"
RECORD_ID_RE = re.compile("^rec_%s$" % ULID)
CAUSAL_RE = re.compile("^%s$" % ULID)
JOB_ID_RE = re.compile(r"^job_[0-9A-Za-z]+$")
POLICY_ID_RE = re.compile(r"^pol_[0-9A-Za-z]+$")

_MISSING = object()


def crockford_id(prefix="rec_"):
    """A fresh client-made id: PREFIX + 26 Crockford base32 characters
    (first character 0-7, so it is a valid 128-bit ULID)."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    raw = os.urandom(26)
    return prefix + alphabet[raw[0] % 8] + "".join(alphabet[b % 32] for b in raw[1:])


def sql_quote(text):
    """TEXT as an SQL string literal (both engines)."""
    return "'" + str(text).replace("'", "''") + "'"


# --------------------------------------------------------------- the daemon

def relaysync_sections(storage, sections=None):
    """Configuration of a RelaySync daemon on STORAGE: the four plugins
    from the build tree, events and jobs polled every 100 ms, bodies up to
    1m (as conf/relaysync.conf), every plugin's rate limit off; SECTIONS
    ({section: {key: value}}) merged over that."""
    base = {"plugins": {"load": PLUGINS},
            "limits": {"max_body_size": "1m"},
            "jobs": {"poll_interval": "100ms"},
            "events": {"poll_interval": "100ms"},
            "users": {"rate_limit": "0"},
            "records": {"rate_limit": "0"},
            "policies": {"rate_limit": "0"},
            "sync": {"rate_limit": "0"}}
    conf = users_sections(storage, base)
    for section, keys in (sections or {}).items():
        conf.setdefault(section, {}).update(keys)
    return conf


def relaysync_daemon_factory(make_daemon, storage):
    """For a test's function-scoped fixture: factory(sections=None,
    **Daemon kwargs) -> RelaySync, a started daemon of the test's own on
    STORAGE (stopped by make_daemon's teardown)."""
    def factory(sections=None, **kw):
        d = make_daemon(sections=relaysync_sections(storage, sections), start=False, **kw)
        env = RelaySync(d, storage)
        d.start()
        return env
    return factory


@pytest.fixture(scope="module")
def _envs():
    """The module's shared daemons, one per engine, stopped at its end."""
    envs = {}
    yield envs
    finish_all([e.d for e in envs.values()])


@pytest.fixture
def rs_daemon(make_daemon, storage):
    """rs_daemon({section: {key: value}}) -> RelaySync: a daemon of one's own."""
    return relaysync_daemon_factory(make_daemon, storage)


def start_relaysync(workdir, storage, sections=None, **kw):
    """A started RelaySync daemon in WORKDIR on STORAGE (the caller stops
    it: conftest.finish_all([env.d]))."""
    d = Daemon(workdir, relaysync_sections(storage, sections), **kw)
    env = RelaySync(d, storage)
    d.start()
    return env


def shared_env(engine, request, envs, tmp_path_factory, sections=None, tag="relaysync"):
    """The module's daemon on ENGINE, started on first use and kept in
    ENVS (a module-scoped dict the caller finishes)."""
    if engine not in envs:
        pg = request.getfixturevalue("pg_server") if engine == "pgsql" else None
        base = tmp_path_factory.mktemp("%s-%s" % (tag, engine))
        storage = Storage(engine, base, pg)
        envs[engine] = start_relaysync(base / "daemon", storage, sections)
    env = envs[engine]
    assert env.d.running(), env.d.log
    return env


def wait_for(predicate, timeout=5.0, interval=0.02):
    """Calls PREDICATE until it returns something true or TIMEOUT passes;
    returns its last value (conftest.wait_for)."""
    return _wait_for(predicate, timeout, interval)


# ------------------------------------------------------------------ replies

class Reply(collections.namedtuple("Reply", "status headers body")):
    """(status, {lowercased header: value}, parsed JSON or None): unpacks
    as a triple."""

    @property
    def replayed(self):
        return self.headers.get("idempotent-replayed") == "true"

    def error_code(self):
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None


def _check(reply, expect, what):
    if expect is None:
        return reply
    allowed = (expect,) if isinstance(expect, int) else tuple(expect)
    assert reply.status in allowed, "%s: expected %s, got %d %r" % (what, allowed, reply.status, reply.body)
    return reply


def _query(params):
    """?a=b&... of the PARAMS that are not None ("" when none)."""
    items = [(k, v) for k, v in params.items() if v is not None]
    return ("?" + urllib.parse.urlencode(items)) if items else ""


class Tenant:
    """A tenant made with relayctl: .id, .admin (its first key, role
    admin), and keys of other roles made on first use (.operator,
    .viewer, or key(role))."""

    def __init__(self, env, created):
        self.env = env
        self.id = created["tenant_id"]
        self.name = created["name"]
        self.admin = created["api_key"]
        self.admin_key_id = created["key_id"]
        self._keys = {"admin": self.admin}

    def key(self, role):
        """An API key of ROLE (made once, then reused)."""
        if role not in self._keys:
            self._keys[role] = self.env.ctl_key(self.id, role)
        return self._keys[role]

    def new_key(self, role):
        """Another API key of ROLE (a new one every call)."""
        return self.env.ctl_key(self.id, role)

    @property
    def operator(self):
        return self.key("operator")

    @property
    def viewer(self):
        return self.key("viewer")

    def __repr__(self):
        return "Tenant(%s)" % self.id


class RelaySync(Users):
    """A running RelaySync daemon, its database and relayctl.  Every route
    helper takes the API key to use as `key` and returns a Reply; EXPECT
    (a status or a tuple of them; None: anything) is asserted."""

    # -- tenants and keys

    def new_tenant(self, name="Acme Field Ops"):
        """A new tenant (relayctl tenant create) as a Tenant."""
        return Tenant(self, self.tenant(name))

    def ctl_key(self, tenant_id, role):
        """A new API key of ROLE in TENANT_ID (relayctl key create)."""
        return self.key(tenant_id, role=role)["api_key"]

    # -- HTTP

    def api(self, method, path, body=None, key=None, headers=None, raw=None, how="x-api-key", cred=None):
        """(status, headers, JSON) of one request.  BODY (dict/list) goes
        as JSON, RAW (bytes) as it is; KEY is sent as X-API-Key (HOW
        "bearer": Authorization: Bearer)."""
        status, hdrs, doc = Users.api(self, method, path, body=body, cred=key if key is not None else cred,
                                      how=how, headers=headers, raw=raw)
        return Reply(status, hdrs, doc)

    # -- records

    def create_record(self, key, fields, idem=None, headers=None, expect=201):
        """POST /v1/records FIELDS (a dict, or bytes sent raw), with
        Idempotency-Key IDEM when given."""
        h = dict(headers or {})
        if idem is not None:
            h["Idempotency-Key"] = idem
        if isinstance(fields, (bytes, bytearray)):
            r = self.api("POST", "/v1/records", key=key, headers=h, raw=bytes(fields))
        else:
            r = self.api("POST", "/v1/records", fields, key=key, headers=h)
        return _check(r, expect, "POST /v1/records")

    def get_record(self, key, rid, expect=200):
        return _check(self.api("GET", "/v1/records/" + rid, key=key), expect, "GET /v1/records/" + rid)

    def patch_record(self, key, rid, patch, causal=_MISSING, idem=None, headers=None, expect=200):
        """PATCH /v1/records/RID with PATCH (plus "causal": CAUSAL when
        given; a PATCH that has its own causal is sent as it is)."""
        h = dict(headers or {})
        if idem is not None:
            h["Idempotency-Key"] = idem
        if isinstance(patch, (bytes, bytearray)):
            r = self.api("PATCH", "/v1/records/" + rid, key=key, headers=h, raw=bytes(patch))
        else:
            body = dict(patch)
            if causal is not _MISSING:
                body["causal"] = causal
            r = self.api("PATCH", "/v1/records/" + rid, body, key=key, headers=h)
        return _check(r, expect, "PATCH /v1/records/" + rid)

    def delete_record(self, key, rid, causal=None, idem=None, how="query", headers=None, expect=200):
        """DELETE /v1/records/RID; CAUSAL (when given) goes as ?causal=
        (HOW "query"), If-Match ("if-match") or a JSON body ("body")."""
        h = dict(headers or {})
        if idem is not None:
            h["Idempotency-Key"] = idem
        path, body = "/v1/records/" + rid, None
        if causal is not None:
            if how == "query":
                path += "?causal=" + urllib.parse.quote(causal)
            elif how == "if-match":
                h["If-Match"] = causal
            elif how == "body":
                body = {"causal": causal}
            else:
                raise ValueError(how)
        return _check(self.api("DELETE", path, body, key=key, headers=h), expect, "DELETE " + path)

    def list_page(self, key, expect=200, **params):
        """One page of GET /v1/records?PARAMS (None values left out)."""
        path = "/v1/records" + _query(params)
        return _check(self.api("GET", path, key=key), expect, "GET " + path)

    def list_records(self, key, **params):
        """Every record of GET /v1/records?PARAMS, following next_cursor
        page by page (asserts 200 on each)."""
        out = []
        params = dict(params)
        for _ in range(100000):
            body = self.list_page(key, **params).body
            out.extend(body["records"])
            if not body["next_cursor"]:
                return out
            params["cursor"] = body["next_cursor"]
        raise AssertionError("GET /v1/records never ended")

    # -- policies

    def post_policy(self, key, name, when, then, priority=None, extra=None, expect=(200, 201)):
        """POST /v1/policies {name, when, then[, priority]} (+ EXTRA members)."""
        body = {"name": name, "when": when, "then": then}
        if priority is not None:
            body["priority"] = priority
        body.update(extra or {})
        return _check(self.api("POST", "/v1/policies", body, key=key), expect, "POST /v1/policies")

    def policies(self, key, expect=200):
        return _check(self.api("GET", "/v1/policies", key=key), expect, "GET /v1/policies")

    # -- sync

    def changes(self, key, since=None, network=None, limit=None, expect=200):
        """GET /v1/sync/changes?since=&network=&limit= (None: left out)."""
        path = "/v1/sync/changes" + _query({"since": since, "network": network, "limit": limit})
        return _check(self.api("GET", path, key=key), expect, "GET " + path)

    def changes_all(self, key, since=None, network=None, limit=None):
        """Pulls the feed from SINCE until has_more is false: (every change
        in order, the last next_cursor)."""
        out = []
        cursor = since
        for _ in range(100000):
            body = self.changes(key, since=cursor, network=network, limit=limit).body
            out.extend(body["changes"])
            cursor = body["next_cursor"]
            if not body["has_more"]:
                return out, cursor
        raise AssertionError("GET /v1/sync/changes never ended")

    def push(self, key, changes, headers=None, expect=200):
        """POST /v1/sync/push {"changes": CHANGES}."""
        return _check(self.api("POST", "/v1/sync/push", {"changes": changes}, key=key, headers=headers),
                      expect, "POST /v1/sync/push")

    def queue(self, key, state=None, limit=None, cursor=None, expect=200):
        """GET /v1/sync/queue?state=&limit=&cursor=."""
        path = "/v1/sync/queue" + _query({"state": state, "limit": limit, "cursor": cursor})
        return _check(self.api("GET", path, key=key), expect, "GET " + path)

    def queue_all(self, key, state=None, limit=None):
        """Every job of GET /v1/sync/queue, following next_cursor."""
        out, cursor = [], None
        for _ in range(100000):
            body = self.queue(key, state=state, limit=limit, cursor=cursor).body
            out.extend(body["jobs"])
            cursor = body["next_cursor"]
            if not cursor:
                return out
        raise AssertionError("GET /v1/sync/queue never ended")

    def retry(self, key, job_id, expect=202):
        return _check(self.api("POST", "/v1/sync/retry/" + job_id, key=key), expect, "POST /v1/sync/retry")

    def wait_for(self, predicate, timeout=5.0, interval=0.02):
        return wait_for(predicate, timeout, interval)

    # -- the database

    def rows(self, table, where=None, order=None):
        """Rows of TABLE (optionally WHERE sql, ORDER BY sql) as dicts;
        numbers as ints and NULL as None on both engines."""
        return table_rows(self.storage, table, where, order)

    def record_rows(self, tenant=None, rid=None):
        """records_records rows (of TENANT / of record RID), by id."""
        return self.rows("records_records", _where(tenant=tenant, id=rid), "id")

    def event_rows(self, tenant=None, type=None):
        """relay_events rows in seq order, "payload" parsed as JSON."""
        rows = self.rows("relay_events", _where(tenant=tenant, type=type), "seq")
        for r in rows:
            r["payload"] = json.loads(r["payload"])
        return rows

    def job_rows(self, tenant=None, target=None, kind=None):
        """relay_jobs rows in creation order, "payload" parsed as JSON."""
        rows = self.rows("relay_jobs", _where(tenant=tenant, target=target, kind=kind), "created_at, id")
        for r in rows:
            try:
                r["payload"] = json.loads(r["payload"])
            except (TypeError, ValueError):
                pass
        return rows

    def idempotency_rows(self, tenant=None, key=None, scope=None):
        """relay_idempotency rows, "body" left as stored text."""
        return self.rows("relay_idempotency", _where(tenant=tenant, key=key, scope=scope), "created_ms, key")


def _where(**eq):
    parts = ["%s = %s" % (col, sql_quote(v)) for col, v in eq.items() if v is not None]
    return " AND ".join(parts) or None


def table_rows(storage, table, where=None, order=None):
    """Rows of TABLE in STORAGE's database as dicts (column: value), read
    directly (sqlite3 / psql with json_agg, so texts with any character
    and NULLs survive): ints are ints, NULL is None."""
    sql = "SELECT * FROM %s" % table
    if where:
        sql += " WHERE " + where
    if order:
        sql += " ORDER BY " + order
    if storage.engine == "sqlite":
        import sqlite3
        con = sqlite3.connect(storage.path, timeout=10)
        try:
            cur = con.execute(sql)
            names = [c[0] for c in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]
        finally:
            con.close()
    return json.loads(pg_query(storage, "SELECT COALESCE(json_agg(t), '[]'::json) FROM (%s) t" % sql))


def table_count(storage, table, where=None):
    """COUNT(*) of TABLE [WHERE]."""
    sql = "SELECT COUNT(*) FROM %s" % table
    if where:
        sql += " WHERE " + where
    return int(scalar(storage, sql))


def scalar(storage, sql):
    """The first column of the first row of SQL as text (None when no row
    or NULL), like Storage.scalar but through pg_query on PostgreSQL."""
    if storage.engine == "sqlite":
        return storage.scalar(sql)
    out = pg_query(storage, "SELECT to_json(t.*)::text FROM (%s) t LIMIT 1" % sql)
    if not out:
        return None
    value = list(json.loads(out).values())[0]
    return None if value is None else str(value)


class _PgSession:
    """One psql process kept open on a database: a query costs a round trip
    instead of starting psql (tens of milliseconds on a busy machine)."""

    MARK = "__relaysync_end__"

    def __init__(self, storage):
        import subprocess
        pg = storage.pg
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1",
                                      "-p", str(pg.port), "-U", pg.user, "-d", storage.dbname],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def alive(self):
        return self.proc.poll() is None

    def query(self, sql):
        self.proc.stdin.write(("%s;\n\\echo %s\n" % (sql.rstrip().rstrip(";"), self.MARK)).encode())
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("psql session ended: %s" % "".join(lines))
            text = line.decode().rstrip("\n")
            if text == self.MARK:
                break
            lines.append(text)
        if any("ERROR:" in l for l in lines):
            raise RuntimeError("psql: %s" % "\n".join(lines))
        return "\n".join(lines).strip()

    def close(self):
        try:
            self.proc.stdin.close()
            self.proc.wait(5)
        except Exception:
            self.proc.kill()
        self.proc.stdout.close()


_PG_SESSIONS = {}


def pg_query(storage, sql):
    """Runs SQL on STORAGE's PostgreSQL database in a psql session kept open
    for it (one per database, closed at exit); returns stdout as psql -A -t
    prints it.  A session that died (server restarted) is opened again."""
    key = (storage.pg.port, storage.dbname)
    sess = _PG_SESSIONS.get(key)
    if sess is None or not sess.alive():
        sess = _PG_SESSIONS[key] = _PgSession(storage)
    try:
        return sess.query(sql)
    except RuntimeError:
        if sess.alive():
            raise
        sess = _PG_SESSIONS[key] = _PgSession(storage)
        return sess.query(sql)


def _close_pg_sessions():
    for sess in _PG_SESSIONS.values():
        sess.close()
    _PG_SESSIONS.clear()


atexit.register(_close_pg_sessions)


# ------------------------------------------------------------------ locks

OUTBOX_LOCK = 727001  # core/events.c: the advisory lock every writer of records takes on PostgreSQL


class hold_writers:
    """`with hold_writers(storage):` makes every writer of records wait
    until the block ends: on SQLite a connection holding the write lock
    (BEGIN IMMEDIATE: the daemon's writers wait at their BEGIN), on
    PostgreSQL a session holding the outbox advisory lock (writers wait
    after BEGIN, when they take it).  .waiters() tells, on PostgreSQL, how
    many sessions wait for it (None on SQLite, where nobody can see it)."""

    def __init__(self, storage):
        self.storage = storage
        self.con = self.proc = None

    def __enter__(self):
        if self.storage.engine == "sqlite":
            import sqlite3
            self.con = sqlite3.connect(self.storage.path, timeout=10, isolation_level=None)
            self.con.execute("BEGIN IMMEDIATE")
            return self
        import subprocess
        pg = self.storage.pg
        self.proc = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-h", "127.0.0.1", "-p", str(pg.port), "-U",
                                      pg.user, "-d", self.storage.dbname],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.proc.stdin.write(b"SELECT pg_advisory_lock(%d);\n\\echo held\n" % OUTBOX_LOCK)
        self.proc.stdin.flush()
        for _ in range(100):
            line = self.proc.stdout.readline()
            if not line or line.strip() == b"held":
                break
        assert line.strip() == b"held", "psql did not take the lock: %r" % self.proc.stderr.read()
        return self

    def waiters(self):
        if self.storage.engine == "sqlite":
            return None
        return int(scalar(self.storage, "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'"
                          " AND objid = %d AND NOT granted" % OUTBOX_LOCK))

    def __exit__(self, *exc):
        if self.con is not None:
            self.con.execute("ROLLBACK")
            self.con.close()
        if self.proc is not None:
            self.proc.stdin.write(b"SELECT pg_advisory_unlock(%d);\n\\q\n" % OUTBOX_LOCK)
            self.proc.stdin.close()
            self.proc.wait(10)
            self.proc.stdout.close()
            self.proc.stderr.close()
        return False


def table_snapshot(storage, tables, where=None):
    """{table: rows} of TABLES (each WHERE sql, e.g. "tenant = 'ten_…'") in
    one round trip (one psql run on PostgreSQL); rows as table_rows gives
    them, sorted, so two snapshots compare equal when nothing changed."""
    def canon(rows):
        return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))
    clause = (" WHERE " + where) if where else ""
    if storage.engine == "sqlite":
        import sqlite3
        con = sqlite3.connect(storage.path, timeout=10)
        try:
            out = {}
            for t in tables:
                cur = con.execute("SELECT * FROM %s%s" % (t, clause))
                names = [c[0] for c in cur.description]
                out[t] = canon([dict(zip(names, row)) for row in cur.fetchall()])
            return out
        finally:
            con.close()
    parts = ", ".join("'%s', (SELECT COALESCE(json_agg(t), '[]'::json) FROM (SELECT * FROM %s%s) t)" % (t, t, clause)
                      for t in tables)
    doc = json.loads(pg_query(storage, "SELECT json_build_object(%s)" % parts))
    return {t: canon(doc[t]) for t in tables}


def linguistic_storage(engine, request, tmp_path):
    """A fresh database like the `storage` fixture's, but on PostgreSQL one
    whose default collation is linguistic (ICU en-US, as a database made
    with the usual en_US.UTF-8 locale sorts: punctuation ignored at first,
    case second), so text order is not byte order.  SQLite: the usual
    file (BINARY collation).  Skips when the server has no ICU."""
    import pytest
    pg = request.getfixturevalue("pg_server") if engine == "pgsql" else None
    st = Storage(engine, tmp_path, pg)
    if engine == "pgsql":
        pg.psql("DROP DATABASE %s" % st.dbname)
        try:
            pg.psql("CREATE DATABASE %s TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu"
                    " ICU_LOCALE 'en-US'" % st.dbname)
        except RuntimeError as e:
            pg.psql("CREATE DATABASE %s" % st.dbname)
            pytest.skip("PostgreSQL without ICU collations: %s" % e)
        assert pg.psql("SELECT 'a_~' < 'a_0'", st.dbname) == "t"  # not byte order
    return st
