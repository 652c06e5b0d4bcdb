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

relay_authn_result users_authenticate(relay_req *req)
{
        const char *cred = credential(req);
        if (!cred || !*cred)
                return RELAY_AUTHN_SKIP;
        relay_db *db = relay_db_of(req);
        key_principal k;
        const char *kind;
        if (tokens_looks_like_token(cred)) {
                bool live = false;
                if (tokens_verify(cred, &k) != RELAY_OK || keys_live(db, k.key_id, &live) != RELAY_DB_OK || !live)
                        return RELAY_AUTHN_DENIED; /* bad, expired, or its key is revoked */
                kind = "token";
        } else if (keys_looks_like_key(cred)) {
                if (keys_verify(db, cred, &k) != RELAY_DB_OK)
                        return RELAY_AUTHN_DENIED;
                kind = "api_key";
        } else {
                return RELAY_AUTHN_SKIP;
        }
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
