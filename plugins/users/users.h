/* users.h - the users plugin's parts: tenants, users, API keys, bearer
 * tokens, invites, the authenticator and relayctl commands. */
#ifndef RELAY_USERS_H
#define RELAY_USERS_H

#include <stdbool.h>
#include <relay/plugin.h>

extern const relay_migration users_migrations[];

/* ------------------------------------------------------------- API keys */

/* A key as shown once: PREFIX + KEY_ID + "." + SECRET. */
#define USERS_KEY_LEN 160

typedef struct key_spec {
        const char *tenant;
        const char *user_id; /* may be NULL */
        const char *name;
        const char *role;   /* admin, operator, viewer */
        const char *scopes; /* space-separated, "*" for all */
        int64_t expires_ms; /* 0: never */
} key_spec;

/* Creates a key; KEY_OUT receives the key (USERS_KEY_LEN), ID_OUT its id (40). */
int keys_create(relay_plugin *p, relay_db *db, const key_spec *spec, char *key_out, char *id_out);
int keys_revoke(relay_db *db, const char *key_id, int64_t *changes);
/* Checks a presented key in constant time; fills the principal's strings
 * into BUF. RELAY_DB_OK when valid, RELAY_ERR when not, else a db status. */
typedef struct key_principal {
        char tenant[64], key_id[40], user_id[64], role[16], scopes[256];
} key_principal;
int keys_verify(relay_db *db, const char *presented, key_principal *out);
/* Is KEY_ID live (not revoked, not expired)?  Cached per worker; a
 * revocation anywhere in this daemon is seen at once. */
int keys_live(relay_db *db, const char *key_id, bool *live);
void keys_revoked_somewhere(void);
bool keys_looks_like_key(const char *s);
int keys_register(relay_plugin *p);

/* --------------------------------------------------------------- tokens */

/* Loads (or makes) the signing key: in start(), on the control thread. */
int tokens_start(relay_plugin *p);
bool tokens_looks_like_token(const char *s);
/* A signed token for PRINCIPAL, valid TTL_MS. */
int tokens_issue(const key_principal *k, int64_t ttl_ms, char *out, size_t len, int64_t *expires_ms);
/* Verifies signature and expiry; fills OUT.  RELAY_OK or RELAY_ERR. */
/* UNTIL (may be NULL) is lowered to the token's expiry. */
int tokens_verify(const char *token, key_principal *out, int64_t *until);
int tokens_register(relay_plugin *p);

/* ------------------------------------------------------- users, invites */

int accounts_register(relay_plugin *p);
int tenants_register(relay_plugin *p);

/* ---------------------------------------------------------- authenticator */

relay_authn_result users_authenticate(relay_req *req);
void authn_configure(relay_plugin *p);

/* ----------------------------------------------------------------- shared */

bool users_valid_role(const char *role);
/* relayctl options: ARGV holds only "--flag value" pairs from ALLOWED
 * (NULL-terminated); VALUES[i] receives ALLOWED[i]'s value or NULL.  -1
 * (with a message on stderr) for an unknown flag or a flag without value. */
int users_parse_opts(int argc, char **argv, const char *const *allowed, const char **values);
/* The --tenant ID of a list command, checked to exist: 0, or the exit
 * code (2 usage, with USAGE printed; 1 no such tenant). */
int users_tenant_arg(relay_plugin *p, int argc, char **argv, const char *usage, const char **tenant);
/* Prints DOC as one JSON line on OUT and frees it; returns 0. */
int users_print(FILE *out, json_t *doc);
/* Does TENANT exist (and, when USER_ID is set, that user in it)? */
int users_tenant_exists(relay_db *db, const char *tenant, const char *user_id, bool *exists);
/* FNV-1a of S: picks a slot in the per-worker caches. */
uint32_t users_slot_hash(const char *s);
/* Hex of BLAKE2b-256(data): how secrets are stored. */
void users_hash_hex(const char *data, size_t len, char out[65]);

#endif
