/* users.c - the users plugin: tenants, users with roles, API keys shown
 * once and stored as hashes, short-lived signed bearer tokens, invites,
 * and the authenticator every other plugin's routes rely on.  Shapes from
 * RelaySync's API (POST /v1/auth/token, GET /v1/users, POST
 * /v1/users/invite); docs/users.md has the formats. */
#include <stdio.h>
#include <string.h>
#include <sodium.h>
#include "users.h"

bool users_valid_role(const char *role)
{
        return role && (!strcmp(role, "admin") || !strcmp(role, "operator") || !strcmp(role, "viewer"));
}

int users_parse_opts(int argc, char **argv, const char *const *allowed, const char **values)
{
        size_t n = 0;
        while (allowed[n])
                values[n++] = NULL;
        for (int i = 0; i < argc; i += 2) {
                size_t k = 0;
                while (k < n && strcmp(argv[i], allowed[k]) != 0)
                        k++;
                if (k == n) {
                        fprintf(stderr, "relayctl: unknown option '%s'\n", argv[i]);
                        return -1;
                }
                if (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0) {
                        fprintf(stderr, "relayctl: %s needs a value\n", argv[i]);
                        return -1;
                }
                values[k] = argv[i + 1];
        }
        return 0;
}

int users_tenant_arg(relay_plugin *p, int argc, char **argv, const char *usage, const char **tenant)
{
        static const char *const allowed[] = {"--tenant", NULL};
        if (users_parse_opts(argc, argv, allowed, tenant) != 0 || !*tenant) {
                fprintf(stderr, "usage: %s\n", usage);
                return 2;
        }
        bool exists = false;
        if (users_tenant_exists(relay_plugin_db(p), *tenant, NULL, &exists) != RELAY_DB_OK || !exists) {
                fprintf(stderr, "relayctl: no tenant %s\n", *tenant);
                return 1;
        }
        return 0;
}

int users_print(FILE *out, json_t *doc)
{
        json_dumpf(doc, out, JSON_COMPACT);
        fputc('\n', out);
        json_decref(doc);
        return 0;
}

int users_tenant_exists(relay_db *db, const char *tenant, const char *user_id, bool *exists)
{
        relay_db_result *r;
        int rc = user_id ? relay_db_query(db, &r, "SELECT 1 FROM users_users WHERE tenant = ? AND id = ?", "ss", tenant,
                                          user_id)
                         : relay_db_query(db, &r, "SELECT 1 FROM users_tenants WHERE id = ?", "s", tenant);
        *exists = rc == RELAY_DB_OK && relay_db_next(r);
        relay_db_free(r);
        return rc;
}

uint32_t users_slot_hash(const char *s)
{
        uint32_t h = 2166136261u;
        for (; *s; s++)
                h = (h ^ (unsigned char)*s) * 16777619u;
        return h;
}

void users_hash_hex(const char *data, size_t len, char out[65])
{
        unsigned char h[32];
        crypto_generichash(h, sizeof(h), (const unsigned char *)data, len, NULL, 0);
        sodium_bin2hex(out, 65, h, sizeof(h));
}

static int init(relay_plugin *p)
{
        if (sodium_init() < 0)
                return RELAY_ERR;
        relay_conf_declare(p, "key_prefix", RELAY_CONF_STRING, "rs_live_", "visible prefix of new API keys");
        relay_conf_declare(p, "token_ttl", RELAY_CONF_DURATION, "15m", "lifetime of bearer tokens");
        relay_conf_declare(p, "invite_ttl", RELAY_CONF_DURATION, "7d", "lifetime of invitations");
        relay_conf_declare(p, "cache_keys", RELAY_CONF_BOOL, "true",
                           "keep verified API keys per worker (false: read the key on every request)");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        /* RelaySync's documented default; control-plane exchanges tighter */
        if (relay_rate_limit(p, NULL, 120) || relay_rate_limit(p, "auth", 10) ||
            relay_migrations(p, users_migrations) || relay_authenticator(p, "users", users_authenticate) ||
            keys_register(p) || tokens_register(p) || accounts_register(p) || tenants_register(p))
                return RELAY_ERR;
        return RELAY_OK;
}

static int start(relay_plugin *p)
{
        authn_configure(p);
        return tokens_start(p);
}

RELAY_PLUGIN(users, .version = "1.0.0", .description = "tenants, users, API keys, bearer tokens", .init = init,
             .start = start);
