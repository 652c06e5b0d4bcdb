/* accounts.c - users of a tenant and invitations:
 *   GET  /v1/users?role=&limit=&cursor=   list, newest last, cursor paged
 *   POST /v1/users/invite                 {"email","role"} (admins)
 *   POST /v1/users/invite/accept          {"token"}: a user and an API key */
#include <stdio.h>
#include <string.h>
#include <sodium.h>
#include "users.h"

#define INVITE_BYTES 24

static json_t *user_json(relay_db_result *r)
{
        char created[40], synced[40];
        return json_pack("{s:s,s:s,s:s,s:s?,s:s}", "id", relay_db_text(r, 0), "email", relay_db_text(r, 1), "role",
                         relay_db_text(r, 2), "last_sync_at",
                         relay_db_is_null(r, 3) ? NULL : relay_time_format(relay_db_int(r, 3), synced, sizeof(synced)),
                         "created_at", relay_time_format(relay_db_int(r, 4), created, sizeof(created)));
}

static int get_users(relay_req *req)
{
        const char *tenant = relay_principal_of(req)->tenant, *role = relay_query(req, "role");
        const char *cursor = relay_query(req, "cursor");
        bool bad = false;
        long limit = relay_query_limit(req, "limit", 50, 200, &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to 200");
        if (role && !users_valid_role(role))
                return relay_error(req, 400, "invalid_role", "role must be admin, operator or viewer");
        char after[64] = "";
        if (cursor && *cursor) {
                int n = relay_b64url_decode(cursor, after, sizeof(after) - 1);
                if (n > 0)
                        after[n] = '\0';
                /* only a user id (usr_ + 26 Crockford characters) is a cursor we gave */
                if (n != 4 + RELAY_ULID_LEN || strncmp(after, "usr_", 4) != 0 ||
                    strspn(after + 4, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") != RELAY_ULID_LEN)
                        return relay_error(req, 400, "invalid_cursor", "cursor is not one this server gave");
        }
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT id, email, role, last_sync_ms, created_ms FROM users_users WHERE tenant = ?"
                                " AND (CAST(? AS TEXT) IS NULL OR role = ?) AND id > ? ORDER BY id LIMIT ?",
                                "ssssi", tenant, role, role, after, (int64_t)limit + 1);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        json_t *users = json_array();
        char next[RELAY_B64_LEN(64)] = "";
        for (long i = 0; relay_db_next(r); i++) {
                if (i == limit) { /* one more than asked: there is a next page */
                        const char *last = json_string_value(json_object_get(json_array_get(users, i - 1), "id"));
                        relay_b64url_encode(last, strlen(last), next, sizeof(next));
                        break;
                }
                json_array_append_new(users, user_json(r));
        }
        relay_db_free(r);
        return relay_reply_json(req, 200, json_pack("{s:o,s:s?}", "users", users, "next_cursor", *next ? next : NULL));
}

static int post_invite(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        const char *email = json_string_value(json_object_get(body, "email"));
        const char *role = json_string_value(json_object_get(body, "role"));
        json_t *errors = NULL;
        if (!email || !strchr(email, '@') || strlen(email) > 254)
                relay_validation_add(&errors, "body", "email", "a valid email address is required", "value_error");
        if (!role || !users_valid_role(role))
                relay_validation_add(&errors, "body", "role", "role must be admin, operator or viewer", "value_error");
        if (errors)
                return relay_error_validation(req, errors);
        unsigned char raw[INVITE_BYTES];
        char token[RELAY_B64_LEN(INVITE_BYTES)], hash[65], id[40], when[40];
        relay_random(raw, sizeof(raw));
        relay_b64url_encode(raw, sizeof(raw), token, sizeof(token));
        users_hash_hex(token, strlen(token), hash);
        relay_id_new("inv_", id, sizeof(id));
        int64_t expires = relay_now_ms() + (int64_t)relay_conf_duration_ms(relay_req_plugin(req), "invite_ttl");
        int rc = relay_db_exec(relay_db_of(req), NULL,
                               "INSERT INTO users_invites (id, tenant, email, role, token_hash, expires_ms, created_ms)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?)",
                               "sssssii", id, relay_principal_of(req)->tenant, email, role, hash, expires,
                               relay_now_ms());
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        relay_set_header(req, "Cache-Control", "no-store");
        rc = relay_reply_json(req, 201,
                              json_pack("{s:{s:s,s:s,s:s,s:s,s:s}}", "invite", "id", id, "email", email, "role", role,
                                        "expires_at", relay_time_format(expires, when, sizeof(when)), "token", token));
        sodium_memzero(token, sizeof(token));
        return rc;
}

/* Claims the invite once, in the transaction that creates the user. */
static int accept(relay_req *req, relay_db *db, const char *hash, json_t **out, char *key, char *key_id)
{
        relay_db_result *r;
        int rc = relay_db_query(db, &r,
                                "SELECT id, tenant, email, role, expires_ms, accepted_ms FROM users_invites"
                                " WHERE token_hash = ?",
                                "s", hash);
        if (rc != RELAY_DB_OK)
                return rc;
        if (!relay_db_next(r)) {
                relay_db_free(r);
                return relay_error(req, 404, "invite.not_found", "no such invitation"), RELAY_ERR;
        }
        if (!relay_db_is_null(r, 5) || relay_db_int(r, 4) <= relay_now_ms()) {
                bool used = !relay_db_is_null(r, 5);
                relay_db_free(r);
                return relay_error(req, 410, used ? "invite.used" : "invite.expired",
                                   used ? "this invitation was already accepted" : "this invitation has expired"),
                       RELAY_ERR;
        }
        char invite[40], tenant[64], email[256], role[16], user_id[40];
        snprintf(invite, sizeof(invite), "%s", relay_db_text(r, 0));
        snprintf(tenant, sizeof(tenant), "%s", relay_db_text(r, 1));
        snprintf(email, sizeof(email), "%s", relay_db_text(r, 2));
        snprintf(role, sizeof(role), "%s", relay_db_text(r, 3));
        relay_db_free(r);
        int64_t changes = 0, now = relay_now_ms();
        rc = relay_db_exec(db, &changes,
                           "UPDATE users_invites SET accepted_ms = ? WHERE id = ? AND accepted_ms IS NULL", "is", now,
                           invite);
        if (rc == RELAY_DB_OK && !changes)
                return relay_error(req, 410, "invite.used", "this invitation was already accepted"), RELAY_ERR;
        relay_id_new("usr_", user_id, sizeof(user_id));
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(
                        db, NULL,
                        "INSERT INTO users_users (tenant, id, email, role, created_ms) VALUES (?, ?, ?, ?, ?)", "ssssi",
                        tenant, user_id, email, role, now);
        key_spec spec = {.tenant = tenant, .user_id = user_id, .role = role, .name = email, .scopes = "*"};
        if (rc == RELAY_DB_OK)
                rc = keys_create(relay_req_plugin(req), db, &spec, key, key_id);
        if (rc == RELAY_DB_OK)
                rc = relay_event_emit(db, tenant, "user.created", json_pack("{s:s,s:s}", "id", user_id, "role", role),
                                      NULL);
        if (rc == RELAY_DB_OK)
                *out = json_pack("{s:s,s:s,s:s,s:s}", "id", user_id, "email", email, "role", role, "tenant_id", tenant);
        return rc;
}

static int post_accept(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        const char *token = json_string_value(json_object_get(body, "token"));
        if (!token)
                return relay_error(req, 400, "invalid_request", "token is required");
        char hash[65], key[USERS_KEY_LEN], key_id[40];
        users_hash_hex(token, strlen(token), hash);
        relay_db *db = relay_db_of(req);
        json_t *user = NULL;
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = accept(req, db, hash, &user, key, key_id);
        if (rc != RELAY_DB_OK) {
                if (relay_db_in_transaction(db))
                        relay_db_rollback(db);
                json_decref(user);
                return relay_replied(req) ? RELAY_OK : relay_db_reply_error(req, rc);
        }
        if ((rc = relay_db_commit(db)) != RELAY_DB_OK) {
                json_decref(user);
                return relay_db_reply_error(req, rc);
        }
        relay_set_header(req, "Cache-Control", "no-store");
        rc = relay_reply_json(req, 201, json_pack("{s:o,s:s,s:s}", "user", user, "api_key", key, "key_id", key_id));
        sodium_memzero(key, sizeof(key));
        return rc;
}

int accounts_register(relay_plugin *p)
{
        relay_route_opts accept_opts = {.size = sizeof(accept_opts),
                                        .method = "POST",
                                        .pattern = "/v1/users/invite/accept",
                                        .handler = post_accept,
                                        .auth = RELAY_AUTH_PUBLIC,
                                        .rate_class = "auth"};
        if (relay_route(p, "GET", "/v1/users", get_users, RELAY_AUTH_TENANT) ||
            relay_route_role(p, "POST", "/v1/users/invite", post_invite, "admin") || relay_route_ex(p, &accept_opts))
                return RELAY_ERR;
        return RELAY_OK;
}
