/* authn.c - the authenticator: `Authorization: Bearer <token or API key>`
 * or `X-API-Key: <API key>`.  Credentials that are not ours (no Relay
 * token, no key shape) are left to the next authenticator in the chain. */
#include <string.h>
#include <sodium.h>
#include "users.h"

static const char *credential(relay_req *req)
{
        const char *h = relay_header(req, "Authorization");
        if (h && strncasecmp(h, "Bearer ", 7) == 0) {
                h += 7;
                while (*h == ' ')
                        h++;
                return h;
        }
        return relay_header(req, "X-API-Key");
}

/* Splits the space-separated scopes in place into a NULL-terminated list. */
static void split_scopes(char *scopes, const char **list, size_t max)
{
        size_t n = 0;
        for (char *save = NULL, *s = strtok_r(scopes, " ", &save); s && n + 1 < max; s = strtok_r(NULL, " ", &save))
                list[n++] = s;
        list[n] = NULL;
}

/* Credentials this worker verified lately, tokens and API keys alike: a
 * keep-alive client sends the same one with every request, and checking a
 * token's signature or reading a key's row each time would cost more than
 * the request.  An entry holds the credential's BLAKE2b digest (never the
 * credential), is found by comparing digests in constant time, and never
 * outlives its token.  The key behind it is checked on every use
 * (keys_live: revocation and expiry, cleared at once by a revocation in
 * this daemon and through the outbox within [events] poll_interval in
 * others).  [users] cache_keys = false reads an API key's row on every
 * request instead. */
#define CRED_CACHE 128
#define CRED_TTL_MS 60000

typedef struct cred_entry {
        unsigned char digest[crypto_generichash_BYTES];
        key_principal k;
        bool token;
        int64_t until_ms;
} cred_entry;

static __thread cred_entry creds[CRED_CACHE];
static bool cache_keys = true; /* set before the workers start */

void authn_configure(relay_plugin *p) { cache_keys = relay_conf_bool(p, "cache_keys"); }

/* Verifies CRED from scratch; fills K and whether it is a token. */
static relay_authn_result verify(relay_db *db, const char *cred, key_principal *k, bool *token, int64_t *until)
{
        *until = relay_now_ms() + CRED_TTL_MS;
        if (tokens_looks_like_token(cred)) {
                *token = true;
                if (tokens_verify(cred, k, until) != RELAY_OK)
                        return RELAY_AUTHN_DENIED; /* bad signature or expired */
                return RELAY_AUTHN_OK;
        }
        if (keys_looks_like_key(cred)) {
                *token = false;
                return keys_verify(db, cred, k) == RELAY_DB_OK ? RELAY_AUTHN_OK : RELAY_AUTHN_DENIED;
        }
        return RELAY_AUTHN_SKIP;
}

/* The slot CRED's DIGEST maps to, and whether it holds CRED's answer. */
static cred_entry *slot_of(const char *cred, unsigned char digest[crypto_generichash_BYTES], int64_t now, bool *hit)
{
        crypto_generichash(digest, crypto_generichash_BYTES, (const unsigned char *)cred, strlen(cred), NULL, 0);
        uint32_t h;
        memcpy(&h, digest, sizeof(h));
        cred_entry *e = &creds[h % CRED_CACHE];
        *hit = e->until_ms > now && sodium_memcmp(e->digest, digest, crypto_generichash_BYTES) == 0;
        return e;
}

relay_authn_result users_authenticate(relay_req *req)
{
        const char *cred = credential(req);
        if (!cred || !*cred)
                return RELAY_AUTHN_SKIP;
        relay_db *db = relay_db_of(req);
        key_principal k;
        bool token = false, live = false;
        int64_t now = relay_now_ms();
        unsigned char digest[crypto_generichash_BYTES];
        bool hit;
        cred_entry *e = slot_of(cred, digest, now, &hit);
        if (hit) {
                k = e->k;
                token = e->token;
        } else {
                int64_t until;
                relay_authn_result r = verify(db, cred, &k, &token, &until);
                if (r != RELAY_AUTHN_OK)
                        return r;
                if (token || cache_keys) {
                        memcpy(e->digest, digest, sizeof(digest));
                        e->k = k;
                        e->token = token;
                        e->until_ms = until;
                }
                live = !token; /* a key was just read from the database */
        }
        if (!live && (keys_live(db, k.key_id, &live) != RELAY_DB_OK || !live))
                return RELAY_AUTHN_DENIED; /* its key is revoked or expired */
        const char *kind = token ? "token" : "api_key";
        const char *scopes[32];
        split_scopes(k.scopes, scopes, 32);
        relay_principal p = {.size = sizeof(p),
                             .tenant = k.tenant,
                             .subject = *k.user_id ? k.user_id : k.key_id,
                             .kind = kind,
                             .role = k.role,
                             .scopes = scopes,
                             .credential = k.key_id};
        relay_set_principal(req, &p);
        return RELAY_AUTHN_OK;
}
