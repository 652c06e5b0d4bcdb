/* keys.c - API keys: PREFIX + KEY_ID + "." + SECRET, shown once, stored as
 * BLAKE2b-256 of the secret.  The key id makes the lookup a primary-key
 * read; the secret is compared in constant time, and a key that does not
 * exist costs the same hash and comparison as one that does. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "users.h"

#define SECRET_BYTES 32
#define LIVE_CACHE 256
#define LIVE_TTL_MS 60000

static int64_t revocations; /* atomic: bumped on every revocation seen */

/* PREFIX (may hold dots) + 26-character id + "." + 43-character secret. */
bool keys_looks_like_key(const char *s)
{
        const char *dot = strrchr(s, '.');
        return dot && dot - s >= RELAY_ULID_LEN &&
               strlen(dot + 1) == (SECRET_BYTES * 4 + 2) / 3; /* unpadded base64url */
}

int keys_create(relay_plugin *p, relay_db *db, const key_spec *spec, char *key_out, char *id_out)
{
        char kid[40], b64[RELAY_B64_LEN(SECRET_BYTES)], hash[65];
        unsigned char secret[SECRET_BYTES];
        relay_id_new("", kid, sizeof(kid));
        relay_random(secret, sizeof(secret));
        relay_b64url_encode(secret, sizeof(secret), b64, sizeof(b64));
        users_hash_hex(b64, strlen(b64), hash);
        sodium_memzero(secret, sizeof(secret));
        const char *prefix = relay_conf_string(p, "key_prefix");
        int rc = relay_db_exec(
                db, NULL,
                "INSERT INTO users_api_keys (id, tenant, user_id, name, prefix, secret_hash, role, scopes,"
                " created_ms, expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                "ssssssssii", kid, spec->tenant, spec->user_id, spec->name, prefix, hash, spec->role,
                spec->scopes && *spec->scopes ? spec->scopes : "*", relay_now_ms(), spec->expires_ms); /* 0: never */
        if (rc == RELAY_DB_OK) {
                snprintf(key_out, USERS_KEY_LEN, "%s%s.%s", prefix, kid, b64);
                snprintf(id_out, 40, "%s", kid);
        }
        sodium_memzero(b64, sizeof(b64));
        return rc;
}

int keys_revoke(relay_db *db, const char *key_id, int64_t *changes)
{
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, changes,
                                   "UPDATE users_api_keys SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL", "is",
                                   relay_now_ms(), key_id);
        /* Other daemons learn of it through the outbox. */
        if (rc == RELAY_DB_OK && *changes)
                rc = relay_event_emit(db, NULL, "api_key.revoked", json_pack("{s:s}", "key_id", key_id), NULL);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc == RELAY_DB_OK)
                keys_revoked_somewhere();
        return rc;
}

static void copy(char *dst, size_t n, const char *src) { snprintf(dst, n, "%s", src ? src : ""); }

static void remember(const char *key_id, bool live, int64_t expires_ms, int64_t generation, int64_t now);

int keys_verify(relay_db *db, const char *presented, key_principal *out)
{
        static const char dummy[65] = "0000000000000000000000000000000000000000000000000000000000000000";
        memset(out, 0, sizeof(*out));
        int64_t gen = __atomic_load_n(&revocations, __ATOMIC_ACQUIRE); /* before the read */
        const char *dot = strrchr(presented, '.');
        char kid[40] = "", hash[65];
        if (dot && dot - presented >= RELAY_ULID_LEN)
                snprintf(kid, sizeof(kid), "%.*s", RELAY_ULID_LEN, dot - RELAY_ULID_LEN);
        const char *secret = dot ? dot + 1 : presented;
        users_hash_hex(secret, strlen(secret), hash);
        relay_db_result *r = NULL;
        int rc = relay_db_query(db, &r,
                                "SELECT secret_hash, tenant, user_id, role, scopes, prefix, expires_ms, revoked_ms"
                                " FROM users_api_keys WHERE id = ?",
                                "s", kid);
        if (rc != RELAY_DB_OK)
                return rc;
        bool found = relay_db_next(r);
        const char *stored = found ? relay_db_text(r, 0) : dummy;
        bool match = strlen(stored) == 64 && sodium_memcmp(stored, hash, 64) == 0; /* same work either way */
        const char *prefix = found ? relay_db_text(r, 5) : "";
        bool prefix_ok = found && (size_t)(dot - presented) == strlen(prefix) + RELAY_ULID_LEN &&
                         strncmp(presented, prefix, strlen(prefix)) == 0;
        int64_t expires = found ? relay_db_int(r, 6) : 0;
        bool live = found && relay_db_is_null(r, 7) && (!expires || expires > relay_now_ms());
        if (match && prefix_ok && live) {
                copy(out->tenant, sizeof(out->tenant), relay_db_text(r, 1));
                copy(out->user_id, sizeof(out->user_id), relay_db_text(r, 2));
                copy(out->role, sizeof(out->role), relay_db_text(r, 3));
                copy(out->scopes, sizeof(out->scopes), relay_db_text(r, 4));
                copy(out->key_id, sizeof(out->key_id), kid);
                /* what was read is the key's liveness too: keys_live need not read it again */
                remember(kid, true, expires, gen, relay_now_ms());
        }
        relay_db_free(r);
        return match && prefix_ok && live ? RELAY_DB_OK : RELAY_ERR;
}

/* ---------------------------------------------------- liveness, cached */

typedef struct live_entry {
        char kid[32];
        bool live;
        int64_t expires_ms; /* 0: never */
        int64_t generation, checked_ms;
} live_entry;

static __thread live_entry cache[LIVE_CACHE]; /* per worker: no locks */

void keys_revoked_somewhere(void) { __atomic_add_fetch(&revocations, 1, __ATOMIC_RELEASE); }

int keys_live(relay_db *db, const char *key_id, bool *live)
{
        live_entry *e = &cache[users_slot_hash(key_id) % LIVE_CACHE];
        int64_t gen = __atomic_load_n(&revocations, __ATOMIC_ACQUIRE), now = relay_now_ms();
        if (strcmp(e->kid, key_id) == 0 && e->generation == gen && now - e->checked_ms < LIVE_TTL_MS) {
                *live = e->live && (!e->expires_ms || e->expires_ms > now); /* a key may expire while cached */
                return RELAY_DB_OK;
        }
        relay_db_result *r;
        int rc = relay_db_query(db, &r, "SELECT expires_ms, revoked_ms FROM users_api_keys WHERE id = ?", "s", key_id);
        if (rc != RELAY_DB_OK)
                return rc;
        int64_t expires = relay_db_next(r) ? relay_db_int(r, 0) : -1;
        *live = expires >= 0 && relay_db_is_null(r, 1) && (!expires || expires > now);
        relay_db_free(r);
        remember(key_id, *live, expires > 0 ? expires : 0, gen, now);
        return RELAY_DB_OK;
}

static void remember(const char *key_id, bool live, int64_t expires_ms, int64_t generation, int64_t now)
{
        live_entry *e = &cache[users_slot_hash(key_id) % LIVE_CACHE];
        snprintf(e->kid, sizeof(e->kid), "%s", key_id);
        e->live = live;
        e->expires_ms = expires_ms;
        e->generation = generation;
        e->checked_ms = now;
}

/* Another daemon revoked a key: drop every cached answer. */
static int on_revoked(relay_plugin *p, const relay_event *ev, void *data)
{
        keys_revoked_somewhere();
        return RELAY_OK;
}

/* ------------------------------------------------------- relayctl key ... */

static int cmd_key_create(relay_plugin *p, int argc, char **argv, FILE *out)
{
        static const char *const allowed[] = {"--tenant", "--role", "--scopes", "--name", "--user", "--expires", NULL};
        const char *v[6];
        if (users_parse_opts(argc, argv, allowed, v) != 0 || !v[0] || (v[1] && !users_valid_role(v[1]))) {
                fprintf(stderr, "usage: relayctl key create --tenant ID [--role admin|operator|viewer] [--scopes 'a b']"
                                " [--name N] [--user ID] [--expires RFC3339]\n");
                return 2;
        }
        key_spec spec = {.tenant = v[0], .role = v[1] ? v[1] : "admin", .scopes = v[2], .name = v[3], .user_id = v[4]};
        if (v[5] && relay_time_parse(v[5], &spec.expires_ms) != RELAY_OK) {
                fprintf(stderr, "relayctl: --expires wants an RFC 3339 time\n");
                return 2;
        }
        relay_db *db = relay_plugin_db(p);
        bool tenant_ok = false, user_ok = true;
        int rc = users_tenant_exists(db, spec.tenant, NULL, &tenant_ok);
        if (rc == RELAY_DB_OK && spec.user_id)
                rc = users_tenant_exists(db, spec.tenant, spec.user_id, &user_ok);
        if (rc != RELAY_DB_OK || !tenant_ok || !user_ok) {
                if (rc != RELAY_DB_OK)
                        fprintf(stderr, "relayctl: %s\n", relay_db_errmsg(db));
                else if (!tenant_ok)
                        fprintf(stderr, "relayctl: no tenant %s\n", spec.tenant);
                else
                        fprintf(stderr, "relayctl: no user %s in tenant %s\n", spec.user_id, spec.tenant);
                return 1;
        }
        char key[USERS_KEY_LEN], id[40];
        if (keys_create(p, db, &spec, key, id) != RELAY_DB_OK) {
                fprintf(stderr, "relayctl: %s\n", relay_db_errmsg(db));
                return 1;
        }
        json_t *doc = json_pack("{s:s,s:s,s:s}", "key_id", id, "tenant_id", spec.tenant, "api_key", key);
        sodium_memzero(key, sizeof(key)); /* the JSON holds its own copy */
        return users_print(out, doc);
}

static int cmd_key_list(relay_plugin *p, int argc, char **argv, FILE *out)
{
        const char *tenant;
        int bad = users_tenant_arg(p, argc, argv, "relayctl key list --tenant ID", &tenant);
        if (bad)
                return bad;
        relay_db *db = relay_plugin_db(p);
        relay_db_result *r;
        if (relay_db_query(db, &r,
                           "SELECT id, prefix, name, user_id, role, scopes, created_ms, expires_ms, revoked_ms"
                           " FROM users_api_keys WHERE tenant = ? ORDER BY id",
                           "s", tenant) != RELAY_DB_OK) {
                fprintf(stderr, "relayctl: %s\n", relay_db_errmsg(db));
                return 1;
        }
        json_t *keys = json_array();
        while (relay_db_next(r)) {
                char created[40], exp[40], rev[40];
                json_array_append_new(
                        keys,
                        json_pack("{s:s,s:s,s:s?,s:s?,s:s,s:s,s:s,s:s?,s:s?}", "key_id", relay_db_text(r, 0), "prefix",
                                  relay_db_text(r, 1), "name", relay_db_text(r, 2), "user_id", relay_db_text(r, 3),
                                  "role", relay_db_text(r, 4), "scopes", relay_db_text(r, 5), "created_at",
                                  relay_time_format(relay_db_int(r, 6), created, sizeof(created)), "expires_at",
                                  relay_db_int(r, 7) ? relay_time_format(relay_db_int(r, 7), exp, sizeof(exp)) : NULL,
                                  "revoked_at",
                                  relay_db_is_null(r, 8) ? NULL
                                                         : relay_time_format(relay_db_int(r, 8), rev, sizeof(rev))));
        }
        relay_db_free(r);
        return users_print(out, keys);
}

static int cmd_key_revoke(relay_plugin *p, int argc, char **argv, FILE *out)
{
        if (argc < 1) {
                fprintf(stderr, "usage: relayctl key revoke KEY_ID\n");
                return 2;
        }
        int64_t changes = 0;
        relay_db *db = relay_plugin_db(p);
        if (keys_revoke(db, argv[0], &changes) != RELAY_DB_OK) {
                fprintf(stderr, "relayctl: %s\n", relay_db_errmsg(db));
                return 1;
        }
        if (!changes) {
                fprintf(stderr, "relayctl: no live key %s\n", argv[0]);
                return 1;
        }
        fprintf(out, "{\"revoked\":\"%s\"}\n", argv[0]);
        return 0;
}

int keys_register(relay_plugin *p)
{
        if (relay_event_subscribe(p, "revocations", "api_key.revoked", on_revoked, NULL) ||
            relay_command(p, "key", "create", "make an API key (shown once)", cmd_key_create) ||
            relay_command(p, "key", "list", "a tenant's keys (never their secrets)", cmd_key_list) ||
            relay_command(p, "key", "revoke", "revoke a key and the tokens issued from it", cmd_key_revoke))
                return RELAY_ERR;
        return RELAY_OK;
}
