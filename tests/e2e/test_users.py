"""The users plugin end to end (docs/users.md), on SQLite and PostgreSQL:
bootstrapping with relayctl, API keys and bearer tokens, authentication,
revocation reaching a running daemon, users and invitations, and tenant
isolation.  Rate limits, failed-auth timing and the no-secret-in-logs
check are in test_users_limits.py.

Most tests share one daemon per engine (each test makes its own tenants,
which is what tenancy is for); tests that need other settings start their
own.  Every test runs once per engine (the `engine` fixture)."""
import json
import threading
import time

import pytest

from conftest import Daemon, Storage, assert_object_error, finish_all
from users_support import (INVITE_RE, KEY_ID_RE, TENANT_RE, USER_RE, Users, b64url, b64url_decode,
                           blake2b_hex, key_parts, parse_time, random_key_id, random_secret, rfc3339, token_claims,
                           answers_per_worker, users_daemon_factory, users_sections, worker_of, workers_of)


@pytest.fixture(scope="module")
def _shared_envs():
    envs = {}
    yield envs
    finish_all([e.d for e in envs.values()])


@pytest.fixture
def env(engine, request, _shared_envs, tmp_path_factory):
    """The module's daemon on the engine under test (started on first use)."""
    if engine not in _shared_envs:
        pg = request.getfixturevalue("pg_server") if engine == "pgsql" else None
        base = tmp_path_factory.mktemp("users-" + engine)
        storage = Storage(engine, base, pg)
        # no per-tenant limit here: some tests send a few hundred requests in a
        # second (test_users_limits.py tests the limits)
        d = Daemon(base / "daemon", users_sections(storage, {"users": {"rate_limit": "0"}}))
        e = Users(d, storage)
        d.start()
        _shared_envs[engine] = e
    e = _shared_envs[engine]
    assert e.d.running(), e.d.log
    return e


@pytest.fixture
def users_daemon(make_daemon, storage):
    """users_daemon({section: {key: value}}, workers=...) -> Users: a daemon of one's own."""
    return users_daemon_factory(make_daemon, storage)


def rows(env, sql):
    return sorted(env.storage.query(sql))


# ============================================================ bootstrapping

def test_tenant_create_prints_tenant_and_first_admin_key(env):
    t = env.tenant("Acme Field Ops")
    assert set(t) == {"tenant_id", "name", "key_id", "api_key"}, t
    assert TENANT_RE.match(t["tenant_id"]) and t["name"] == "Acme Field Ops"
    assert KEY_ID_RE.match(t["key_id"])
    kid, secret = key_parts(t["api_key"])
    assert kid == t["key_id"]
    # what the database keeps: the tenant, and only BLAKE2b-256 of the secret
    assert env.storage.query("SELECT name FROM users_tenants WHERE id = '%s'" % t["tenant_id"]) == [("Acme Field Ops",)]
    row = env.storage.query("SELECT tenant, prefix, secret_hash, role, scopes, name FROM users_api_keys"
                            " WHERE id = '%s'" % kid)
    assert row == [(t["tenant_id"], "rs_live_", blake2b_hex(secret), "admin", "*", "bootstrap")]
    everything = json.dumps(env.storage.query("SELECT * FROM users_api_keys")) + \
        json.dumps(env.storage.query("SELECT * FROM users_signing_keys"))
    assert secret not in everything
    # the key works at once, before any user exists
    assert env.users(t["api_key"]) == {"users": [], "next_cursor": None}
    assert env.user_list(t["tenant_id"]) == []
    # a second tenant is a different tenant with a different key
    t2 = env.tenant("Other")
    assert t2["tenant_id"] != t["tenant_id"] and t2["api_key"] != t["api_key"]
    # names with spaces and unicode are kept as given
    t3 = env.tenant("Zürich Ops — 2")
    assert env.storage.scalar("SELECT name FROM users_tenants WHERE id = '%s'" % t3["tenant_id"]) == "Zürich Ops — 2"


def test_custom_key_prefix(users_daemon, engine):
    u = users_daemon({"users": {"key_prefix": "acme_test_"}})
    t = u.tenant()
    kid, secret = key_parts(t["api_key"], prefix="acme_test_")
    assert env_prefix(u, kid) == "acme_test_"
    k = u.key(t["tenant_id"], role="viewer")
    key_parts(k["api_key"], prefix="acme_test_")
    for how in ("x-api-key", "bearer"):
        assert u.status("GET", "/v1/users", cred=k["api_key"], how=how) == 200
    assert u.status("GET", "/v1/users", cred=u.token(k["api_key"]), how="bearer") == 200
    # keys the daemon makes (an invitation's first key) carry the prefix too
    accepted = u.add_user(t["api_key"], "pat@acme.test", "operator")
    key_parts(accepted["api_key"], prefix="acme_test_")
    assert u.status("GET", "/v1/users", cred=accepted["api_key"]) == 200
    # the prefix is part of the key: the same id and secret under another prefix is refused
    forged = "rs_live_%s.%s" % (kid, secret)
    assert u.status("GET", "/v1/users", cred=forged) == 401
    assert u.api("POST", "/v1/auth/token", {"api_key": forged})[0] == 401
    # relayctl -o users.key_prefix=... overrides the file
    t2 = u.tenant(overrides=["users.key_prefix=zz_"])
    key_parts(t2["api_key"], prefix="zz_")
    assert u.status("GET", "/v1/users", cred=t2["api_key"]) == 200


def env_prefix(u, kid):
    return u.storage.scalar("SELECT prefix FROM users_api_keys WHERE id = '%s'" % kid)


def test_key_prefix_with_a_dot(env):
    t = env.tenant(overrides=["users.key_prefix=acme.live_"])
    key_parts(t["api_key"], prefix="acme.live_")
    assert env.api("POST", "/v1/auth/token", {"api_key": t["api_key"]})[0] == 200
    assert env.status("GET", "/v1/users", cred=t["api_key"]) == 200


def test_key_create_list_revoke(env):
    t = env.tenant()
    tid = t["tenant_id"]
    user = env.add_user(t["api_key"], "owner@acme.test", "viewer")["user"]
    expires = rfc3339(3600)
    k = env.key(tid, role="operator", scopes="users:read sync:write", name="ci bot", expires=expires)
    assert set(k) == {"key_id", "tenant_id", "api_key"} and k["tenant_id"] == tid
    assert key_parts(k["api_key"])[0] == k["key_id"]
    claims = token_claims(env.token(k["api_key"]))
    assert {c: claims[c] for c in ("t", "k", "u", "r", "sc")} == \
        {"t": tid, "k": k["key_id"], "u": "", "r": "operator", "sc": "users:read sync:write"}
    bound = env.key(tid, role="viewer", user=user["id"])
    claims = token_claims(env.token(bound["api_key"]))
    assert (claims["u"], claims["r"], claims["sc"]) == (user["id"], "viewer", "*")
    plain = env.key(tid)  # defaults: admin, all scopes, no expiry
    assert token_claims(env.token(plain["api_key"]))["r"] == "admin"

    rc, out, err = env.ctl_raw("key", "list", "--tenant", tid)
    assert rc == 0, err
    listed = json.loads(out)
    by_id = {x["key_id"]: x for x in listed}
    assert [x["key_id"] for x in listed] == sorted(by_id)
    # bootstrap, the invitee's first key, and the three made here
    assert len(listed) == 5 and {t["key_id"], k["key_id"], bound["key_id"], plain["key_id"]} <= set(by_id)
    ops = by_id[k["key_id"]]
    assert ops["prefix"] == "rs_live_" and ops["role"] == "operator" and ops["name"] == "ci bot"
    assert ops["scopes"] == "users:read sync:write"
    assert abs(parse_time(ops["expires_at"]) - parse_time(expires)) < 0.002
    assert abs(parse_time(ops["created_at"]) - time.time()) < 60
    assert ops["revoked_at"] is None and ops["user_id"] is None
    assert by_id[bound["key_id"]]["user_id"] == user["id"]
    assert by_id[t["key_id"]]["name"] == "bootstrap" and by_id[t["key_id"]]["expires_at"] is None
    # never a secret, nor what is stored of one
    for key in (t, k, bound, plain):
        _, secret = key_parts(key["api_key"])
        assert secret not in out and blake2b_hex(secret) not in out
    for h, in env.storage.query("SELECT secret_hash FROM users_api_keys WHERE tenant = '%s'" % tid):
        assert h not in out
    for x in listed:
        assert not {"secret", "secret_hash", "api_key", "hash"} & set(x)

    # revoke
    assert env.status("GET", "/v1/users", cred=k["api_key"]) == 200
    rc, out, err = env.ctl_raw("key", "revoke", k["key_id"])
    assert (rc, json.loads(out)) == (0, {"revoked": k["key_id"]}), err
    revoked = {x["key_id"]: x for x in env.keys(tid)}[k["key_id"]]
    assert abs(parse_time(revoked["revoked_at"]) - time.time()) < 60
    # every worker that cached the key hears of relayctl's revocation through
    # the outbox (test_relayctl_revocation_* time that); until then a worker
    # that never saw the key already refuses it, one that did may not
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        seen = answers_per_worker(env, k["api_key"], "bearer")
        if all(set(v) == {401} for v in seen.values()):
            break
        time.sleep(0.05)
    assert all(set(v) == {401} for v in seen.values()), seen
    status, _, body = env.api("GET", "/v1/users", cred=k["api_key"])
    assert status == 401
    assert_object_error(body, "unauthorized")
    assert env.api("POST", "/v1/auth/token", {"api_key": k["api_key"]})[0] == 401
    # again: nothing live to revoke
    rc, out, err = env.ctl_raw("key", "revoke", k["key_id"])
    assert rc == 1 and out == "" and k["key_id"] in err
    # the others are untouched
    assert env.status("GET", "/v1/users", cred=plain["api_key"]) == 200
    assert env.status("GET", "/v1/users", cred=t["api_key"]) == 200


def test_user_list(env):
    t = env.tenant()
    made = [env.add_user(t["api_key"], "u%d@acme.test" % i, role)["user"]
            for i, role in enumerate(("admin", "viewer", "operator"))]
    listed = env.user_list(t["tenant_id"])
    assert listed == sorted(({"id": u["id"], "email": u["email"], "role": u["role"]} for u in made),
                            key=lambda x: x["id"])
    assert env.user_list(env.tenant()["tenant_id"]) == []


def test_relayctl_usage_errors(env):
    t = env.tenant()
    tid = t["tenant_id"]
    keys_before = env.storage.scalar("SELECT COUNT(*) FROM users_api_keys")
    tenants_before = env.storage.scalar("SELECT COUNT(*) FROM users_tenants")
    bad_usage = [
        ("tenant", "create"),
        ("tenant", "create", ""),
        ("tenant", "create", "x" * 201),
        ("key", "create"),
        ("key", "create", "--role", "admin"),
        ("key", "create", "--tenant", tid, "--role", "owner"),
        ("key", "create", "--tenant", tid, "--expires", "tomorrow"),
        ("key", "create", "--tenant", tid, "--expires", "2030-13-01T00:00:00Z"),
        ("key", "list"),
        ("key", "revoke"),
        ("user", "list"),
        ("user", "list", tid),
    ]
    for args in bad_usage:
        rc, out, err = env.ctl_raw(*args)
        assert (rc, out) == (2, ""), (args, rc, out, err)
        assert err.strip(), args
    unknown = [
        (("key", "create", "--tenant", "ten_01NOSUCHTENANT000000000000"), "ten_01NOSUCHTENANT000000000000"),
        (("key", "revoke", "01NOSUCHKEY0000000000000000"), "01NOSUCHKEY0000000000000000"),
    ]
    for args, named in unknown:
        rc, out, err = env.ctl_raw(*args)
        assert (rc, out) == (1, ""), (args, rc, out, err)
        assert named in err
    # an unknown command group is bad usage too
    rc, out, err = env.ctl_raw("frobnicate", "now")
    assert rc == 2
    assert env.storage.scalar("SELECT COUNT(*) FROM users_api_keys") == keys_before
    assert env.storage.scalar("SELECT COUNT(*) FROM users_tenants") == tenants_before


def test_relayctl_lists_of_an_unknown_tenant_fail(env):
    for args in (("key", "list", "--tenant", "ten_01NOSUCHTENANT000000000000"),
                 ("user", "list", "--tenant", "ten_01NOSUCHTENANT000000000000")):
        rc, out, err = env.ctl_raw(*args)
        assert rc == 1 and "ten_01NOSUCHTENANT000000000000" in err, (args, rc, out, err)


def test_relayctl_option_without_value_is_bad_usage(env):
    tid = env.tenant()["tenant_id"]
    before = env.storage.scalar("SELECT COUNT(*) FROM users_api_keys WHERE tenant = '%s'" % tid)
    for flag in ("--role", "--expires"):
        rc, out, err = env.ctl_raw("key", "create", "--tenant", tid, flag)
        assert rc == 2, (flag, rc, out)
    assert env.storage.scalar("SELECT COUNT(*) FROM users_api_keys WHERE tenant = '%s'" % tid) == before


def test_relayctl_key_for_a_user_of_another_tenant_is_refused(env):
    a, b = env.tenant("A"), env.tenant("B")
    a_user = env.add_user(a["api_key"], "alice@a.example", "admin")["user"]
    for user in (a_user["id"], "usr_01NOSUCHUSER00000000000000"):
        rc, out, err = env.ctl_raw("key", "create", "--tenant", b["tenant_id"], "--user", user)
        assert rc == 1 and out == "", (user, rc, out)


# ================================================================== tokens

def test_token_exchange(env):
    t = env.tenant()
    before = time.time()
    status, hdrs, body = env.api("POST", "/v1/auth/token", {"api_key": t["api_key"]})
    assert status == 200, body
    assert hdrs.get("cache-control") == "no-store"
    assert hdrs.get("content-type", "").startswith("application/json")
    assert set(body) == {"token", "token_type", "expires_at", "expires_in"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] in (899, 900)  # [users] token_ttl default: 15 minutes
    assert abs(parse_time(body["expires_at"]) - (before + 900)) < 5
    token = body["token"]
    tag, claims64, mac64 = token.split(".")
    assert tag == "rtk1" and len(b64url_decode(mac64)) == 32  # HMAC-SHA-512-256
    claims = token_claims(token)
    assert claims == {"t": t["tenant_id"], "k": t["key_id"], "u": "", "r": "admin", "sc": "*",
                      "exp": claims["exp"]}
    assert abs(claims["exp"] / 1000 - parse_time(body["expires_at"])) < 0.002
    # the token authenticates; a later exchange gives another working token
    assert env.status("GET", "/v1/users", cred=token, how="bearer") == 200
    time.sleep(0.005)  # (exchanges within one millisecond give the same token)
    again = env.token(t["api_key"])
    assert again != token and env.status("GET", "/v1/users", cred=again, how="bearer") == 200
    # a token is not an API key: it cannot be exchanged for another token
    assert env.api("POST", "/v1/auth/token", {"api_key": token})[0] == 401


def test_token_exchange_refusals(env):
    t = env.tenant()
    kid, secret = key_parts(t["api_key"])
    revoked = env.key(t["tenant_id"])
    env.ctl("key", "revoke", revoked["key_id"])
    expired = env.key(t["tenant_id"], expires=rfc3339(-60))
    refused = {
        "wrong secret": "rs_live_%s.%s" % (kid, random_secret()),
        "unknown key id": "rs_live_%s.%s" % (random_key_id(), secret),
        "garbage": "hello world",
        "empty": "",
        "secret alone": secret,
        "no prefix": "%s.%s" % (kid, secret),
        "truncated": t["api_key"][:-1],
        "extra char": t["api_key"] + "A",
        "revoked": revoked["api_key"],
        "expired": expired["api_key"],
    }
    for what, key in refused.items():
        status, hdrs, body = env.api("POST", "/v1/auth/token", {"api_key": key})
        assert status == 401, (what, body)
        assert_object_error(body, "unauthorized")
        assert "token" not in json.dumps(body)
        if key:
            assert key not in json.dumps(body), what
    for doc in ({}, {"key": t["api_key"]}, {"api_key": None}, {"api_key": 12}, {"api_key": [t["api_key"]]}):
        status, _, body = env.api("POST", "/v1/auth/token", doc)
        assert status == 400, (doc, body)
        assert_object_error(body, "invalid_request")
    for raw in (b"{x", b'{"api_key": ', b"[]", b'"rs_live_x"', b""):
        status, _, body = env.api("POST", "/v1/auth/token", raw=raw)
        assert status == 400, (raw, body)
        assert_object_error(body, "invalid_json")
    # the key itself still works after all that
    assert env.token(t["api_key"])


def test_malformed_bodies_do_not_echo_the_key(env):
    """The 400 for broken JSON quotes the parser's complaint, never the key."""
    t = env.tenant()
    key = t["api_key"]
    _, secret = key_parts(key)
    for raw in ('{"api_key": "%s' % key, '{"api_key": "%s"' % key, '{"api_key": %s}' % key,
                '{"api_key": "%s",}' % key, '{"api_key": "%s", "api_key": "%s"}' % (key, key),
                '{"api_key" "%s"}' % key, '{"api_key": "%s" x}' % key):
        status, _, body = env.api("POST", "/v1/auth/token", raw=raw.encode())
        assert status == 400, (raw, body)
        assert_object_error(body, "invalid_json")
        assert secret not in json.dumps(body) and key[:20] not in json.dumps(body), body


# ========================================================== authentication

def test_three_ways_to_authenticate(env):
    t = env.tenant()
    token = env.token(t["api_key"])
    for cred, how in ((token, "bearer"), (t["api_key"], "bearer"), (t["api_key"], "x-api-key")):
        status, hdrs, body = env.api("GET", "/v1/users", cred=cred, how=how)
        assert (status, body) == (200, {"users": [], "next_cursor": None}), (how, body)
        assert "www-authenticate" not in hdrs
    # the scheme is case-insensitive, extra spaces after it are skipped
    for header in ("bearer " + token, "BEARER " + t["api_key"], "Bearer   " + token):
        assert env.api("GET", "/v1/users", headers={"Authorization": header})[0] == 200, header


def test_missing_and_bad_credentials(env):
    t = env.tenant()
    kid, secret = key_parts(t["api_key"])
    status, hdrs, body = env.api("GET", "/v1/users")
    assert status == 401 and hdrs.get("www-authenticate") == "Bearer"
    assert_object_error(body, "unauthorized")
    assert body["error"]["message"] == "authentication required"
    revoked = env.key(t["tenant_id"])
    env.ctl("key", "revoke", revoked["key_id"])
    bad = {
        "wrong secret": "rs_live_%s.%s" % (kid, random_secret()),
        "unknown key": "rs_live_%s.%s" % (random_key_id(), random_secret()),
        "revoked key": revoked["api_key"],
        "expired key": env.key(t["tenant_id"], expires=rfc3339(-1))["api_key"],
        "bad token": "rtk1.e30.AAAA",
        "token without MAC": "rtk1." + b64url(json.dumps({"t": t["tenant_id"], "k": kid, "r": "admin"})),
    }
    for what, cred in bad.items():
        for how in ("x-api-key", "bearer"):
            status, hdrs, body = env.api("GET", "/v1/users", cred=cred, how=how)
            assert status == 401, (what, how, body)
            assert hdrs.get("www-authenticate") == "Bearer"
            assert_object_error(body, "unauthorized")
            assert body["error"]["message"] == "invalid credentials", (what, how, body)
            assert cred not in json.dumps(body)
    # what is neither a key nor a token is no credential at all
    for cred in ("hello", "Basic dXNlcjpwYXNz"):
        status, hdrs, body = env.api("GET", "/v1/users", headers={"X-API-Key": cred})
        assert status == 401 and hdrs.get("www-authenticate") == "Bearer"
        assert_object_error(body, "unauthorized")
    status, _, body = env.api("GET", "/v1/users", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert status == 401
    assert body["error"]["message"] == "authentication required"
    # the good key is still good
    assert env.status("GET", "/v1/users", cred=t["api_key"]) == 200


def flip(ch):
    return "B" if ch != "B" else "C"


def test_tampered_tokens_are_refused(env):
    t = env.tenant()
    viewer = env.key(t["tenant_id"], role="viewer")
    token = env.token(viewer["api_key"])
    other = env.token(env.tenant()["api_key"])
    tag, claims64, mac = token.split(".")
    claims = token_claims(token)
    as_admin = dict(claims, r="admin")
    as_other_tenant = dict(claims, t=token_claims(other)["t"])
    longer = dict(claims, exp=claims["exp"] + 10 ** 9)
    mid_c, mid_m = len(claims64) // 2, len(mac) // 2
    tampered = {
        "claims char flipped": "%s.%s%s%s.%s" % (tag, claims64[:mid_c], flip(claims64[mid_c]), claims64[mid_c + 1:],
                                                 mac),
        "MAC char flipped": "%s.%s.%s%s%s" % (tag, claims64, mac[:mid_m], flip(mac[mid_m]), mac[mid_m + 1:]),
        "MAC first char flipped": "%s.%s.%s%s" % (tag, claims64, flip(mac[0]), mac[1:]),
        "role raised": "%s.%s.%s" % (tag, b64url(json.dumps(as_admin, separators=(",", ":"))), mac),
        "other tenant": "%s.%s.%s" % (tag, b64url(json.dumps(as_other_tenant, separators=(",", ":"))), mac),
        "lifetime extended": "%s.%s.%s" % (tag, b64url(json.dumps(longer, separators=(",", ":"))), mac),
        "another token's MAC": "%s.%s.%s" % (tag, claims64, other.split(".")[2]),
        "MAC cut short": token[:-2],
        "MAC padded": token + "AA",
        "MAC removed": "%s.%s." % (tag, claims64),
        "no MAC": "%s.%s" % (tag, claims64),
        "other version": "rtk2.%s.%s" % (claims64, mac),
    }
    for what, forged in tampered.items():
        assert forged != token
        status, hdrs, body = env.api("GET", "/v1/users", cred=forged, how="bearer")
        assert status == 401, (what, body)
        assert_object_error(body, "unauthorized")
        # and a forged admin token cannot invite
        assert env.status("POST", "/v1/users/invite", cred=forged, how="bearer",
                          body={"email": "x@y.z", "role": "admin"}) == 401, what
    assert env.status("GET", "/v1/users", cred=token, how="bearer") == 200
    assert env.status("POST", "/v1/users/invite", cred=token, how="bearer", body={"email": "x@y.z", "role": "admin"}) \
        == 403


def test_token_dies_with_its_expiring_key(env):
    t = env.tenant()
    k = env.key(t["tenant_id"], expires=rfc3339(1.2))
    token = env.token(k["api_key"])
    before = answers_per_worker(env, token, "bearer")  # every worker has seen it live
    assert all(set(v) == {200} for v in before.values()), before
    expires = {x["key_id"]: x for x in env.keys(t["tenant_id"])}[k["key_id"]]["expires_at"]
    time.sleep(max(0.0, parse_time(expires) - time.time()) + 0.3)
    assert env.status("GET", "/v1/users", cred=k["api_key"]) == 401  # the key itself is refused
    after = answers_per_worker(env, token, "bearer")
    assert all(set(v) == {401} for v in after.values()), after


def test_short_lifetimes(users_daemon):
    """token_ttl = 1s, invite_ttl = 1s, and a key that expires in a second."""
    u = users_daemon({"users": {"token_ttl": "1s", "invite_ttl": "1s"}})
    t = u.tenant()
    status, hdrs, body = u.api("POST", "/v1/auth/token", {"api_key": t["api_key"]})
    assert status == 200 and body["expires_in"] in (0, 1)
    token = body["token"]
    exp = token_claims(token)["exp"] / 1000
    assert 0.7 < exp - time.time() <= 1.05
    invite = u.invite(t["api_key"], "late@acme.test", "viewer")
    assert 0.5 < parse_time(invite["expires_at"]) - time.time() <= 1.05
    short_expires = rfc3339(1.0)
    short = u.key(t["tenant_id"], expires=short_expires)
    short_token = u.token(short["api_key"])
    assert u.status("GET", "/v1/users", cred=token, how="bearer") == 200
    assert u.status("GET", "/v1/users", cred=short["api_key"]) == 200
    time.sleep(max(0.0, max(exp, parse_time(invite["expires_at"]), parse_time(short_expires)) - time.time()) + 0.2)
    for cred, how in ((token, "bearer"), (short["api_key"], "x-api-key"), (short["api_key"], "bearer"),
                      (short_token, "bearer")):
        status, hdrs, body = u.api("GET", "/v1/users", cred=cred, how=how)
        assert status == 401 and hdrs.get("www-authenticate") == "Bearer", (how, body)
        assert body["error"]["message"] == "invalid credentials"
    assert u.api("POST", "/v1/auth/token", {"api_key": short["api_key"]})[0] == 401
    status, _, body = u.api("POST", "/v1/users/invite/accept", {"token": invite["token"]})
    assert status == 410
    assert_object_error(body, "invite.expired")
    assert u.user_list(t["tenant_id"]) == []
    # a fresh token from the long-lived key works
    assert u.status("GET", "/v1/users", cred=u.token(t["api_key"]), how="bearer") == 200


# ================================================================ revocation

def revocation_latency(u):
    """Revokes, with relayctl, a key whose API key and two tokens every
    worker of U has seen (and cached) live; returns the seconds until every
    one of them was refused by every worker.  Checks that they stay refused
    and that another key of the tenant is untouched."""
    t = u.tenant()
    k = u.key(t["tenant_id"])
    tokens = [u.token(k["api_key"]) for _ in range(2)]
    keep = u.key(t["tenant_id"])
    keep_token = u.token(keep["api_key"])
    creds = [(k["api_key"], "x-api-key"), (k["api_key"], "bearer")] + [(tok, "bearer") for tok in tokens]
    workers = set()
    for cred, how in creds + [(keep_token, "bearer")]:
        seen = answers_per_worker(u, cred, how)
        assert all(set(v) == {200} for v in seen.values()), (how, seen)
        workers |= set(seen)
    assert len(workers) == workers_of(u)

    rc, out, err = u.ctl_raw("key", "revoke", k["key_id"])
    assert rc == 0, err
    revoked_at = time.monotonic()
    # until every credential has been refused by every worker
    pending = {(cred, how, w) for cred, how in creds for w in workers}
    while pending and time.monotonic() - revoked_at < 3.0:
        for cred, how in {(c, h) for c, h, _ in pending}:
            status, hdrs, _ = u.api("GET", "/v1/users", cred=cred, how=how)
            if status == 401:
                pending.discard((cred, how, worker_of(hdrs)))
    latency = time.monotonic() - revoked_at
    assert not pending, "%d credential/worker pairs still accept the revoked key %.1fs later" % (len(pending),
                                                                                               latency)
    # and stays revoked, everywhere
    for cred, how in creds:
        seen = answers_per_worker(u, cred, how)
        assert all(set(v) == {401} for v in seen.values()), (how, seen)
    assert u.api("POST", "/v1/auth/token", {"api_key": k["api_key"]})[0] == 401
    # other keys of the tenant, and their tokens, are untouched
    assert u.status("GET", "/v1/users", cred=keep_token, how="bearer") == 200
    assert u.status("GET", "/v1/users", cred=keep["api_key"]) == 200
    assert u.status("GET", "/v1/users", cred=t["api_key"]) == 200
    return latency


def test_relayctl_revocation_reaches_the_daemon_within_a_second(env):
    """[events] poll_interval = 100ms: a key revoked by relayctl (another
    process) stops working, with every token issued from it, within 1 s,
    on every worker (each caches a key's liveness)."""
    latency = revocation_latency(env)
    print("revocation reached every worker in %.3fs" % latency)
    assert latency < 1.0, "revocation took %.3fs to reach the daemon" % latency


def test_relayctl_revocation_with_the_default_poll_interval(users_daemon):
    """The same with [events] poll_interval left at its default (250 ms)."""
    u = users_daemon({"events": {"poll_interval": None}, "users": {"rate_limit": "0"}})
    latency = revocation_latency(u)
    print("revocation (default poll interval) reached every worker in %.3fs" % latency)
    assert latency < 1.0, "revocation took %.3fs to reach the daemon" % latency


def test_uncached_keys_are_refused_on_the_next_request(users_daemon):
    """[users] cache_keys = false: every request reads the key's row, so a
    key revoked by relayctl is refused by the very next request, with no
    wait for the outbox (poll_interval set long to show it), while tokens
    still go through their liveness cache."""
    u = users_daemon({"users": {"cache_keys": "false", "rate_limit": "0"}, "events": {"poll_interval": "30s"}})
    t = u.tenant()
    k = u.key(t["tenant_id"])
    for how in ("x-api-key", "bearer"):
        seen = answers_per_worker(u, k["api_key"], how)
        assert all(set(v) == {200} for v in seen.values()), (how, seen)
    rc, out, err = u.ctl_raw("key", "revoke", k["key_id"])
    assert rc == 0, err
    for how in ("x-api-key", "bearer"):
        seen = answers_per_worker(u, k["api_key"], how)
        assert all(set(v) == {401} for v in seen.values()), (how, seen)
    assert u.status("GET", "/v1/users", cred=t["api_key"]) == 200


def test_cached_key_waits_for_the_outbox(users_daemon):
    """The default (cache_keys = true) with a long poll_interval: a cached key
    revoked by another process still answers until the daemon hears of the
    revocation, which shows the cache is in the path (and so what
    cache_keys = false is for)."""
    u = users_daemon({"users": {"rate_limit": "0"}, "events": {"poll_interval": "30s"}})
    t = u.tenant()
    k = u.key(t["tenant_id"])
    seen = answers_per_worker(u, k["api_key"], "x-api-key")
    assert all(set(v) == {200} for v in seen.values()), seen
    rc, out, err = u.ctl_raw("key", "revoke", k["key_id"])
    assert rc == 0, err
    assert u.status("GET", "/v1/users", cred=k["api_key"], how="x-api-key") == 200
    # a key this daemon never saw is read, so its revocation counts at once
    fresh = u.key(t["tenant_id"])
    assert u.ctl_raw("key", "revoke", fresh["key_id"])[0] == 0
    assert u.status("GET", "/v1/users", cred=fresh["api_key"]) == 401


# ==================================================================== users

def make_users(env, admin_key, specs):
    return [env.add_user(admin_key, email, role)["user"] for email, role in specs]


def test_list_users_filter_and_pages(env):
    t = env.tenant()
    roles = ["admin", "operator", "viewer", "viewer", "admin", "viewer", "operator"]
    made = make_users(env, t["api_key"], [("user%d@acme.test" % i, r) for i, r in enumerate(roles)])
    body = env.users(t["api_key"])
    assert body["next_cursor"] is None
    assert [u["id"] for u in body["users"]] == sorted(u["id"] for u in made)
    for u in body["users"]:
        assert set(u) == {"id", "email", "role", "last_sync_at", "created_at"}
        assert USER_RE.match(u["id"]) and u["last_sync_at"] is None
        assert abs(parse_time(u["created_at"]) - time.time()) < 60
    by_id = {u["id"]: u for u in made}
    assert {u["id"]: (u["email"], u["role"]) for u in body["users"]} == \
        {i: (u["email"], u["role"]) for i, u in by_id.items()}
    # role filter
    for role in ("admin", "operator", "viewer"):
        got = env.users(t["api_key"], "?role=" + role)["users"]
        assert sorted(u["id"] for u in got) == sorted(u["id"] for u in made if u["role"] == role), role
    # pages of one, chained until next_cursor is null
    for query, expect in (("", made), ("&role=viewer", [u for u in made if u["role"] == "viewer"])):
        seen, cursor, pages = [], None, 0
        while True:
            page = env.users(t["api_key"], "?limit=1" + query + ("&cursor=" + cursor if cursor else ""))
            pages += 1
            assert len(page["users"]) == 1, page
            seen += [u["id"] for u in page["users"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert pages < 20
        assert len(seen) == len(set(seen)) == len(expect) == pages
        assert seen == sorted(u["id"] for u in expect)
    # pages of three: 3, 3, 1
    sizes, cursor = [], None
    while True:
        page = env.users(t["api_key"], "?limit=3" + ("&cursor=" + cursor if cursor else ""))
        sizes.append(len(page["users"]))
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sizes == [3, 3, 1]
    assert len(env.users(t["api_key"], "?limit=200")["users"]) == 7
    # a token and any role may list
    viewer = env.key(t["tenant_id"], role="viewer")
    assert len(env.users(env.token(viewer["api_key"]), how="bearer")["users"]) == 7


def test_list_users_bad_queries(env):
    t = env.tenant()
    for query, code in (("?limit=0", "invalid_limit"), ("?limit=201", "invalid_limit"), ("?limit=-1", "invalid_limit"),
                        ("?limit=abc", "invalid_limit"), ("?limit=", "invalid_limit"), ("?limit=1.5", "invalid_limit"),
                        ("?role=owner", "invalid_role"), ("?role=ADMIN", "invalid_role"), ("?role=", "invalid_role"),
                        ("?cursor=!!", "invalid_cursor"), ("?cursor=a", "invalid_cursor"),
                        ("?cursor=%25%25", "invalid_cursor")):
        status, _, body = env.api("GET", "/v1/users" + query, cred=t["api_key"])
        assert status == 400, (query, body)
        assert_object_error(body, code)
    # and without credentials the answer is 401 whatever the query
    assert env.status("GET", "/v1/users?limit=0") == 401


def test_list_users_rejects_a_cursor_it_did_not_give(env):
    t = env.tenant()
    env.add_user(t["api_key"], "someone@acme.test")
    for cursor in ("zzzz", b64url("not a user id")):
        status, _, body = env.api("GET", "/v1/users?cursor=" + cursor, cred=t["api_key"])
        assert status == 400, (cursor, body)


# ================================================================== invites

def test_invite_by_role(env):
    t = env.tenant()
    tid = t["tenant_id"]
    status, hdrs, body = env.api("POST", "/v1/users/invite", {"email": "new@acme.test", "role": "operator"},
                                 cred=t["api_key"])
    assert status == 201, body
    assert hdrs.get("cache-control") == "no-store"
    inv = body["invite"]
    assert set(body) == {"invite"} and set(inv) == {"id", "email", "role", "expires_at", "token"}
    assert INVITE_RE.match(inv["id"]) and inv["email"] == "new@acme.test" and inv["role"] == "operator"
    assert abs(parse_time(inv["expires_at"]) - (time.time() + 7 * 86400)) < 60  # invite_ttl: 7 days
    assert len(b64url_decode(inv["token"])) == 24
    # stored as a hash only
    row = env.storage.query("SELECT tenant, email, role, token_hash, accepted_ms FROM users_invites WHERE id = '%s'"
                            % inv["id"])
    assert row[0][:4] == (tid, "new@acme.test", "operator", blake2b_hex(inv["token"]))
    assert row[0][4] in (None, "")
    assert inv["token"] not in json.dumps(env.storage.query("SELECT * FROM users_invites"))
    # admins only, however they authenticate
    assert env.status("POST", "/v1/users/invite", cred=env.token(t["api_key"]), how="bearer",
                      body={"email": "b@acme.test", "role": "viewer"}) == 201
    count = env.storage.scalar("SELECT COUNT(*) FROM users_invites WHERE tenant = '%s'" % tid)
    for role in ("operator", "viewer"):
        k = env.key(tid, role=role)
        for cred, how in ((k["api_key"], "x-api-key"), (env.token(k["api_key"]), "bearer")):
            status, hdrs, body = env.api("POST", "/v1/users/invite", {"email": "c@acme.test", "role": "viewer"},
                                         cred=cred, how=how)
            assert status == 403, (role, how, body)
            assert_object_error(body, "forbidden")
    # an invited admin may invite; an invited viewer may not
    admin = env.add_user(t["api_key"], "boss@acme.test", "admin")
    viewer = env.add_user(t["api_key"], "peon@acme.test", "viewer")
    assert env.status("POST", "/v1/users/invite", cred=admin["api_key"], body={"email": "d@acme.test",
                                                                                "role": "viewer"}) == 201
    assert env.status("POST", "/v1/users/invite", cred=viewer["api_key"], body={"email": "e@acme.test",
                                                                                 "role": "viewer"}) == 403
    assert env.storage.scalar("SELECT COUNT(*) FROM users_invites WHERE tenant = '%s'" % tid) == str(int(count) + 3)
    # without credentials: 401
    assert env.status("POST", "/v1/users/invite", body={"email": "f@acme.test", "role": "viewer"}) == 401


def test_invite_validation(env):
    t = env.tenant()
    cases = [
        ({"email": "not-an-email", "role": "viewer"}, [["body", "email"]]),
        ({"email": "a@b.c", "role": "owner"}, [["body", "role"]]),
        ({"email": "a@b.c"}, [["body", "role"]]),
        ({"role": "admin"}, [["body", "email"]]),
        ({}, [["body", "email"], ["body", "role"]]),
        ({"email": 5, "role": ["admin"]}, [["body", "email"], ["body", "role"]]),
        ({"email": "x" * 250 + "@b.cd", "role": "viewer"}, [["body", "email"]]),
    ]
    before = env.storage.scalar("SELECT COUNT(*) FROM users_invites")
    for doc, locs in cases:
        status, _, body = env.api("POST", "/v1/users/invite", doc, cred=t["api_key"])
        assert status == 422, (doc, body)
        assert_object_error(body, "validation_failed")
        details = body["error"]["details"]
        assert [d["loc"] for d in details] == locs, (doc, body)
        for d in details:
            assert set(d) == {"loc", "msg", "type"} and d["msg"] and d["type"] == "value_error"
        assert body["error"]["message"].startswith(locs[0][-1] + ": ")
    for raw in (b"{", b"[1]", b""):
        status, _, body = env.api("POST", "/v1/users/invite", raw=raw, cred=t["api_key"])
        assert status == 400, (raw, body)
        assert_object_error(body, "invalid_json")
    assert env.storage.scalar("SELECT COUNT(*) FROM users_invites") == before


def test_invite_accept(env):
    t = env.tenant()
    tid = t["tenant_id"]
    for role in ("admin", "operator", "viewer"):
        inv = env.invite(t["api_key"], "%s@acme.test" % role, role)
        status, hdrs, body = env.api("POST", "/v1/users/invite/accept", {"token": inv["token"]})
        assert status == 201, body
        assert hdrs.get("cache-control") == "no-store"
        assert set(body) == {"user", "api_key", "key_id"}
        user = body["user"]
        assert set(user) == {"id", "email", "role", "tenant_id"}
        assert USER_RE.match(user["id"]) and (user["email"], user["role"], user["tenant_id"]) == \
            ("%s@acme.test" % role, role, tid)
        assert key_parts(body["api_key"])[0] == body["key_id"]
        # the key works, as that user, with the invited role
        claims = token_claims(env.token(body["api_key"]))
        assert (claims["t"], claims["u"], claims["r"], claims["k"]) == (tid, user["id"], role, body["key_id"])
        assert env.status("GET", "/v1/users", cred=body["api_key"]) == 200
        can_invite = env.status("POST", "/v1/users/invite", cred=body["api_key"],
                                body={"email": "x-%s@acme.test" % role, "role": "viewer"})
        assert can_invite == (201 if role == "admin" else 403)
        listed = {k["key_id"]: k for k in env.keys(tid)}[body["key_id"]]
        assert (listed["user_id"], listed["role"], listed["name"]) == (user["id"], role, user["email"])
        # once only
        status, _, body = env.api("POST", "/v1/users/invite/accept", {"token": inv["token"]})
        assert status == 410
        assert_object_error(body, "invite.used")
        accepted = env.storage.scalar("SELECT accepted_ms FROM users_invites WHERE id = '%s'" % inv["id"])
        assert accepted and abs(int(accepted) / 1000 - time.time()) < 60
    assert sorted(u["role"] for u in env.users(t["api_key"])["users"]) == ["admin", "operator", "viewer"]
    # unknown, and malformed requests
    for token in (b64url(b"\0" * 24), "x", ""):
        status, _, body = env.api("POST", "/v1/users/invite/accept", {"token": token})
        assert status == 404, (token, body)
        assert_object_error(body, "invite.not_found")
    for doc in ({}, {"token": None}, {"token": 7}):
        status, _, body = env.api("POST", "/v1/users/invite/accept", doc)
        assert status == 400, (doc, body)
        assert_object_error(body, "invalid_request")
    status, _, body = env.api("POST", "/v1/users/invite/accept", raw=b'{"token":')
    assert status == 400
    assert_object_error(body, "invalid_json")
    assert len(env.user_list(tid)) == 3


def test_accepting_an_invite_for_an_existing_email(env):
    t = env.tenant()
    first = env.invite(t["api_key"], "twice@acme.test", "viewer")
    second = env.invite(t["api_key"], "twice@acme.test", "admin")
    user = env.accept(first["token"])["user"]
    status, _, body = env.api("POST", "/v1/users/invite/accept", {"token": second["token"]})
    assert status == 409, body
    assert_object_error(body, "conflict")
    assert env.user_list(t["tenant_id"]) == [{"id": user["id"], "email": "twice@acme.test", "role": "viewer"}]
    # nothing of the failed accept remains: no key, and the invitation is still unused
    assert env.storage.scalar("SELECT COUNT(*) FROM users_api_keys WHERE tenant = '%s'" % t["tenant_id"]) == "2"
    assert env.storage.scalar("SELECT accepted_ms FROM users_invites WHERE id = '%s'" % second["id"]) in (None, "")


def test_concurrent_accepts_of_one_invite(env):
    t = env.tenant()
    invites = [env.invite(t["api_key"], "race%d@acme.test" % i, "operator") for i in range(4)]
    for inv in invites:
        barrier = threading.Barrier(2, timeout=10)
        results = []

        def go():
            barrier.wait()
            results.append(env.api("POST", "/v1/users/invite/accept", {"token": inv["token"]}))

        threads = [threading.Thread(target=go) for _ in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(20)
        statuses = sorted(r[0] for r in results)
        assert statuses == [201, 410], [(r[0], r[2]) for r in results]
        assert_object_error([r for r in results if r[0] == 410][0][2], "invite.used")
        winner = [r for r in results if r[0] == 201][0][2]
        assert env.status("GET", "/v1/users", cred=winner["api_key"]) == 200
    listed = env.user_list(t["tenant_id"])
    assert sorted(u["email"] for u in listed) == ["race%d@acme.test" % i for i in range(4)]
    assert env.storage.scalar("SELECT COUNT(*) FROM users_api_keys WHERE tenant = '%s' AND user_id IS NOT NULL"
                              % t["tenant_id"]) == "4"


# ======================================================== tenant isolation

def snapshot(env, tenant):
    return {
        "users": rows(env, "SELECT id, email, role, last_sync_ms, created_ms FROM users_users WHERE tenant = '%s'"
                      % tenant),
        "keys": rows(env, "SELECT id, user_id, role, scopes, revoked_ms, expires_ms FROM users_api_keys"
                     " WHERE tenant = '%s'" % tenant),
        "invites": rows(env, "SELECT id, email, role, accepted_ms FROM users_invites WHERE tenant = '%s'" % tenant),
        "cli": env.user_list(tenant),
    }


def test_tenant_isolation(env):
    a, b = env.tenant("Tenant A"), env.tenant("Tenant B")
    a_users = make_users(env, a["api_key"], [("alice@a.example", "admin"), ("andy@a.example", "operator"),
                                             ("amy@a.example", "viewer")])
    a_invite = env.invite(a["api_key"], "pending@a.example", "admin")  # not accepted
    b_admin = b["api_key"]
    b_user = env.add_user(b_admin, "bob@b.example", "viewer")
    b_viewer_key = env.key(b["tenant_id"], role="viewer")["api_key"]
    secrets_of_a = [a["tenant_id"], a["key_id"], a_invite["id"], "a.example"] + [u["id"] for u in a_users]
    before = snapshot(env, a["tenant_id"])

    def clean(body):
        text = json.dumps(body)
        for s in secrets_of_a:
            assert s not in text, (s, text)

    b_creds = [(b_admin, "x-api-key"), (b_admin, "bearer"), (env.token(b_admin), "bearer"),
               (b_user["api_key"], "x-api-key"), (env.token(b_user["api_key"]), "bearer")]
    # A's real user ids as cursors (malformed ones are refused: see
    # test_list_users_rejects_a_cursor_it_did_not_give)
    cursors = [b64url(u["id"]) for u in a_users]
    for cred, how in b_creds:
        for query in ["", "?limit=200", "?role=admin", "?role=operator", "?role=viewer"] + \
                     ["?cursor=" + c for c in cursors if c]:
            status, _, body = env.api("GET", "/v1/users" + query, cred=cred, how=how,
                                      headers={"X-Tenant": a["tenant_id"]})
            assert status == 200, body
            clean(body)
            for u in body["users"]:
                assert u["id"] == b_user["user"]["id"]
        full = env.users(cred, how=how)["users"]
        assert [u["id"] for u in full] == [b_user["user"]["id"]]
        # a token made from B's key is B's, whatever the request says
        status, _, body = env.api("POST", "/v1/auth/token", {"api_key": b_admin, "tenant": a["tenant_id"],
                                                             "tenant_id": a["tenant_id"]},
                                  cred=cred, how=how, headers={"X-Tenant": a["tenant_id"]})
        assert status == 200 and token_claims(body["token"])["t"] == b["tenant_id"]
    # B's admin invites: the invitation and its user are B's, whatever the body says
    for i, extra in enumerate(({}, {"tenant": a["tenant_id"]}, {"tenant_id": a["tenant_id"]})):
        email = "b-new-%d@b.example" % i
        status, _, body = env.api("POST", "/v1/users/invite", dict({"email": email, "role": "admin"}, **extra),
                                  cred=b_admin, headers={"X-Tenant": a["tenant_id"]})
        assert status == 201, body
        clean(body)
        accepted = env.accept(body["invite"]["token"])
        clean(accepted)
        assert accepted["user"]["tenant_id"] == b["tenant_id"]
        assert token_claims(env.token(accepted["api_key"]))["t"] == b["tenant_id"]
    # B's viewer cannot invite at all
    status, _, body = env.api("POST", "/v1/users/invite", {"email": "v@a.example", "role": "admin",
                                                           "tenant_id": a["tenant_id"]}, cred=b_viewer_key)
    assert status == 403
    clean(body)
    # A's invitation cannot be used to learn about A through B: accept is by token only; a wrong token is 404
    status, _, body = env.api("POST", "/v1/users/invite/accept", {"token": b64url(a_invite["id"])}, cred=b_admin)
    assert status == 404
    clean(body)
    # A forged token claiming tenant A on B's key id (the MAC cannot match)
    b_token = env.token(b_admin)
    tag, claims64, mac = b_token.split(".")
    forged_claims = dict(token_claims(b_token), t=a["tenant_id"])
    forged = "%s.%s.%s" % (tag, b64url(json.dumps(forged_claims, separators=(",", ":"))), mac)
    status, _, body = env.api("GET", "/v1/users", cred=forged, how="bearer")
    assert status == 401
    clean(body)
    # A's credentials act as A, never as B, whatever the request says
    a_token = env.token(a["api_key"])
    for cred, how in ((a["api_key"], "x-api-key"), (a_token, "bearer")):
        body = env.api("GET", "/v1/users", cred=cred, how=how, headers={"X-Tenant": b["tenant_id"]})[2]
        assert sorted(u["id"] for u in body["users"]) == sorted(u["id"] for u in a_users)
        assert b_user["user"]["id"] not in json.dumps(body) and "b.example" not in json.dumps(body)
    # A's data is exactly as it was; B's has the four B users
    after = snapshot(env, a["tenant_id"])
    assert after == before
    assert len(env.user_list(b["tenant_id"])) == 4
    assert all(u["email"].endswith("@b.example") for u in env.user_list(b["tenant_id"]))
    # and A can still accept its own pending invitation, into A
    assert env.accept(a_invite["token"])["user"]["tenant_id"] == a["tenant_id"]
