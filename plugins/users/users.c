/* users.c - the users plugin: tenants, users with roles, API keys shown
 * once and stored as hashes, short-lived signed bearer tokens, invites,
 * and the authenticator every other plugin's routes rely on.  Shapes from
 * RelaySync's API (POST /v1/auth/token, GET /v1/users, POST
 * /v1/users/invite); docs/users.md has the formats. */
#include <string.h>
#include <sodium.h>
#include "users.h"

bool users_valid_role(const char *role)
{
        return role && (!strcmp(role, "admin") || !strcmp(role, "operator") || !strcmp(role, "viewer"));
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
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        /* RelaySync's documented default; control-plane exchanges tighter */
        if (relay_rate_limit(p, NULL, 120) || relay_rate_limit(p, "auth", 10) ||
            relay_migrations(p, users_migrations) || relay_authenticator(p, "users", users_authenticate) ||
            keys_register(p) || tokens_register(p) || accounts_register(p) || tenants_register(p))
                return RELAY_ERR;
        return RELAY_OK;
}

static int start(relay_plugin *p) { return tokens_start(p); }

RELAY_PLUGIN(users, .version = "1.0.0", .description = "tenants, users, API keys, bearer tokens", .init = init,
             .start = start);
