/* authn.c - the authenticator: `Authorization: Bearer <token or API key>`
 * or `X-API-Key: <API key>`.  Credentials that are not ours (no Relay
 * token, no key shape) are left to the next authenticator in the chain. */
#include <string.h>
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

/* Tokens this worker verified lately: a keep-alive client sends the same
 * one with every request, and checking its signature and parsing its
 * claims each time would cost more than the request.  An entry never
 * outlives its token, and the key behind it is checked on every use
 * (keys_live: revocation and expiry).  API keys are not cached: each use
 * reads the key, so revoking one takes effect on the next request. */
#define CRED_CACHE 128
#define CRED_MAX 320
#define CRED_TTL_MS 60000

typedef struct cred_entry {
        char cred[CRED_MAX];
        key_principal k;
        bool token;
        int64_t until_ms;
} cred_entry;

static __thread cred_entry creds[CRED_CACHE];

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

relay_authn_result users_authenticate(relay_req *req)
{
        const char *cred = credential(req);
        if (!cred || !*cred)
                return RELAY_AUTHN_SKIP;
        relay_db *db = relay_db_of(req);
        key_principal k;
        bool token = false;
        cred_entry *e = strlen(cred) < CRED_MAX ? &creds[users_slot_hash(cred) % CRED_CACHE] : NULL;
        int64_t now = relay_now_ms();
        if (e && e->until_ms > now && strcmp(e->cred, cred) == 0) {
                k = e->k;
                token = e->token;
        } else {
                int64_t until;
                relay_authn_result r = verify(db, cred, &k, &token, &until);
                if (r != RELAY_AUTHN_OK)
                        return r;
                if (e && token) {
                        snprintf(e->cred, sizeof(e->cred), "%s", cred);
                        e->k = k;
                        e->token = token;
                        e->until_ms = until;
                }
        }
        bool live = !token; /* a key was just read from the database */
        if (token && (keys_live(db, k.key_id, &live) != RELAY_DB_OK || !live))
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
