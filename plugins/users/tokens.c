/* tokens.c - short-lived bearer tokens: "rtk1." + base64url(claims) + "." +
 * base64url(HMAC-SHA-512-256 of what precedes), signed with a key kept in
 * the database so every daemon sharing it accepts every daemon's tokens.
 * Claims: t tenant, k API key id, u user, r role, sc scopes, exp (ms).
 * A token lives no longer than its key: verification also checks the key
 * (keys_live), so revoking the key ends its tokens. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "users.h"

#define TOKEN_TAG "rtk1."

static unsigned char signing_key[crypto_auth_KEYBYTES];
static bool have_key;

bool tokens_looks_like_token(const char *s) { return strncmp(s, TOKEN_TAG, sizeof(TOKEN_TAG) - 1) == 0; }

/* One signing key per database: the first daemon to start makes it. */
int tokens_start(relay_plugin *p)
{
        relay_db *db = relay_plugin_db(p);
        unsigned char fresh[crypto_auth_KEYBYTES];
        char b64[RELAY_B64_LEN(crypto_auth_KEYBYTES)];
        crypto_auth_keygen(fresh);
        relay_b64url_encode(fresh, sizeof(fresh), b64, sizeof(b64));
        sodium_memzero(fresh, sizeof(fresh));
        int rc = relay_db_exec(db, NULL,
                               "INSERT INTO users_signing_keys (id, secret, created_ms) VALUES ('primary', ?, ?)"
                               " ON CONFLICT (id) DO NOTHING",
                               "si", b64, relay_now_ms());
        sodium_memzero(b64, sizeof(b64));
        relay_db_result *r = NULL;
        if (rc == RELAY_DB_OK)
                rc = relay_db_query(db, &r, "SELECT secret FROM users_signing_keys WHERE id = 'primary'", "");
        if (rc != RELAY_DB_OK || !relay_db_next(r) ||
            relay_b64url_decode(relay_db_text(r, 0), signing_key, sizeof(signing_key)) != (int)sizeof(signing_key)) {
                relay_log(p, RELAY_LOG_ERROR, "cannot load the token signing key: %s", relay_db_errmsg(db));
                relay_db_free(r);
                return RELAY_ERR;
        }
        relay_db_free(r);
        have_key = true;
        return RELAY_OK;
}

int tokens_issue(const key_principal *k, int64_t ttl_ms, char *out, size_t len, int64_t *expires_ms)
{
        if (!have_key)
                return RELAY_ERR;
        *expires_ms = relay_now_ms() + ttl_ms;
        json_t *claims = json_pack("{s:s,s:s,s:s,s:s,s:s,s:I}", "t", k->tenant, "k", k->key_id, "u", k->user_id, "r",
                                   k->role, "sc", k->scopes, "exp", (json_int_t)*expires_ms);
        char *text = json_dumps(claims, JSON_COMPACT);
        json_decref(claims);
        if (!text)
                return RELAY_ERR;
        size_t n = strlen(text);
        char *b64 = malloc(RELAY_B64_LEN(n));
        unsigned char mac[crypto_auth_BYTES];
        char mac64[RELAY_B64_LEN(crypto_auth_BYTES)];
        int rc = RELAY_ERR;
        if (b64) {
                relay_b64url_encode(text, n, b64, RELAY_B64_LEN(n));
                int w = snprintf(out, len, "%s%s", TOKEN_TAG, b64);
                if (w > 0 && (size_t)w < len) {
                        crypto_auth(mac, (const unsigned char *)out, (size_t)w, signing_key);
                        relay_b64url_encode(mac, sizeof(mac), mac64, sizeof(mac64));
                        if ((size_t)w + 1 + strlen(mac64) < len) {
                                snprintf(out + w, len - (size_t)w, ".%s", mac64);
                                rc = RELAY_OK;
                        }
                }
        }
        free(b64);
        free(text);
        return rc;
}

static void claim(json_t *claims, const char *name, char *dst, size_t n)
{
        snprintf(dst, n, "%s", json_string_value(json_object_get(claims, name)) ?: "");
}

int tokens_verify(const char *token, key_principal *out, int64_t *until)
{
        memset(out, 0, sizeof(*out));
        const char *dot = strrchr(token, '.');
        size_t signed_len = dot ? (size_t)(dot - token) : 0;
        if (!have_key || !tokens_looks_like_token(token) || signed_len <= sizeof(TOKEN_TAG) - 1 || strlen(token) > 4096)
                return RELAY_ERR;
        unsigned char mac[crypto_auth_BYTES + 8];
        if (relay_b64url_decode(dot + 1, mac, sizeof(mac)) != crypto_auth_BYTES ||
            crypto_auth_verify(mac, (const unsigned char *)token, signed_len, signing_key) != 0)
                return RELAY_ERR; /* constant-time check of the signature */
        size_t b64_len = signed_len - (sizeof(TOKEN_TAG) - 1);
        char b64[4096], text[4096];
        snprintf(b64, sizeof(b64), "%.*s", (int)b64_len, token + sizeof(TOKEN_TAG) - 1);
        int n = relay_b64url_decode(b64, text, sizeof(text) - 1);
        if (n < 0)
                return RELAY_ERR;
        text[n] = '\0';
        json_t *claims = json_loads(text, 0, NULL);
        json_int_t exp = json_integer_value(json_object_get(claims, "exp"));
        if (!claims || exp <= relay_now_ms()) {
                json_decref(claims);
                return RELAY_ERR;
        }
        claim(claims, "t", out->tenant, sizeof(out->tenant));
        claim(claims, "k", out->key_id, sizeof(out->key_id));
        claim(claims, "u", out->user_id, sizeof(out->user_id));
        claim(claims, "r", out->role, sizeof(out->role));
        claim(claims, "sc", out->scopes, sizeof(out->scopes));
        json_decref(claims);
        if (until && *until > exp)
                *until = exp;
        return RELAY_OK;
}

/* POST /v1/auth/token {"api_key": "..."} -> {"token", "expires_at"} */
static int post_token(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        const char *key = json_string_value(json_object_get(body, "api_key"));
        if (!key)
                return relay_error(req, 400, "invalid_request", "api_key is required");
        relay_db *db = relay_db_of(req);
        key_principal k;
        int rc = keys_verify(db, key, &k);
        if (rc == RELAY_ERR)
                return relay_error(req, 401, "unauthorized", "invalid API key");
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        char token[2048], when[40];
        int64_t expires;
        relay_plugin *p = relay_req_plugin(req);
        if (tokens_issue(&k, (int64_t)relay_conf_duration_ms(p, "token_ttl"), token, sizeof(token), &expires) !=
            RELAY_OK)
                return relay_error(req, 500, "internal", "cannot issue a token");
        relay_set_header(req, "Cache-Control", "no-store");
        rc = relay_reply_json(req, 200,
                              json_pack("{s:s,s:s,s:s,s:I}", "token", token, "token_type", "Bearer", "expires_at",
                                        relay_time_format(expires, when, sizeof(when)), "expires_in",
                                        (json_int_t)((expires - relay_now_ms()) / 1000)));
        sodium_memzero(token, sizeof(token));
        return rc;
}

int tokens_register(relay_plugin *p)
{
        relay_route_opts o = {.size = sizeof(o),
                              .method = "POST",
                              .pattern = "/v1/auth/token",
                              .handler = post_token,
                              .auth = RELAY_AUTH_PUBLIC,
                              .rate_class = "auth"};
        return relay_route_ex(p, &o);
}
