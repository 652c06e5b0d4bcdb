/* endpoints.c - the endpoint routes (tenant principals; admins write,
 * admins and operators read):
 *   POST   /v1/webhooks               {"url","events","description"?} -> 201, with the secret
 *   GET    /v1/webhooks?limit=&cursor= newest first
 *   GET    /v1/webhooks/:id
 *   PATCH  /v1/webhooks/:id           url, events, description, enabled
 *   DELETE /v1/webhooks/:id           204; its pending deliveries fail when they run
 *   POST   /v1/webhooks/:id/rotate    -> 200, with the new secret
 * The secret is shown by POST and rotate only; it is stored sealed. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <curl/curl.h>
#include <sodium.h>
#include "webhooks.h"

#define MAX_URL 2048
#define MAX_PATTERNS 50
#define MAX_PATTERN_LEN 128
#define MAX_DESCRIPTION 500

bool wh_endpoint_id_valid(const char *s) { return relay_id_valid("wh_", s); }

json_t *wh_endpoint_json(relay_db_result *r)
{
        char created[40], updated[40], until[40];
        bool enabled = relay_db_int(r, 4) != 0;
        json_t *events = relay_db_json(r, 2);
        bool grace = !relay_db_is_null(r, 11) && relay_db_int(r, 11) > relay_now_ms();
        return json_pack("{s:s,s:s,s:o,s:s?,s:b,s:s,s:s?,s:I,s:s?,s:s,s:s}", "id", relay_db_text(r, 0), "url",
                         relay_db_text(r, 1), "events", events ? events : json_array(), "description",
                         relay_db_text(r, 3), "enabled", enabled, "status", enabled ? "active" : "disabled",
                         "disabled_reason", enabled ? NULL : relay_db_text(r, 5), "consecutive_failures",
                         (json_int_t)relay_db_int(r, 6), "previous_secret_expires_at",
                         grace ? relay_time_format(relay_db_int(r, 11), until, sizeof(until)) : NULL, "created_at",
                         relay_time_format(relay_db_int(r, 7), created, sizeof(created)), "updated_at",
                         relay_time_format(relay_db_int(r, 8), updated, sizeof(updated)));
}

int wh_endpoint_load(relay_db *db, const char *tenant, const char *id, relay_db_result **out)
{
        return relay_db_query(db, out,
                              "SELECT " WH_ENDPOINT_COLUMNS " FROM webhooks_endpoints WHERE tenant = ? AND id = ?",
                              "ss", tenant, id);
}

/* ------------------------------------------------------------ validation */

/* Is HOST an IP literal ("[::1]", "10.0.0.1", or an IPv4 in another
 * notation a resolver accepts: "2130706433", "0x7f.1")?  Its canonical
 * text goes to IP. */
static bool ip_literal(const char *host, char ip[INET6_ADDRSTRLEN])
{
        struct in_addr a4;
        struct in6_addr a6;
        size_t n = strlen(host);
        if (n > 2 && host[0] == '[' && host[n - 1] == ']') {
                char inner[64];
                if (n - 2 >= sizeof(inner))
                        return false;
                memcpy(inner, host + 1, n - 2);
                inner[n - 2] = '\0';
                if (inet_pton(AF_INET6, inner, &a6) != 1)
                        return false;
                return inet_ntop(AF_INET6, &a6, ip, INET6_ADDRSTRLEN) != NULL;
        }
        if (inet_aton(host, &a4) == 1)
                return inet_ntop(AF_INET, &a4, ip, INET6_ADDRSTRLEN) != NULL;
        return false;
}

typedef enum { URL_OK, URL_BAD, URL_PRIVATE } url_check;

static url_check check_url(const char *url, const char **why, char ip[INET6_ADDRSTRLEN])
{
        *why = NULL;
        if (strlen(url) > MAX_URL) {
                *why = "url must be at most 2048 characters";
                return URL_BAD;
        }
        for (const char *c = url; *c; c++)
                if ((unsigned char)*c <= ' ' || *c == 0x7f) {
                        *why = "url must not contain spaces or control characters";
                        return URL_BAD;
                }
        /* the scheme and "//" as written, then a host: curl would read
         * "http:/x" and "http:///x" as http://x/ */
        size_t pre = strncasecmp(url, "http://", 7) == 0 ? 7 : strncasecmp(url, "https://", 8) == 0 ? 8 : 0;
        if (!pre || url[pre] == '/' || url[pre] == '\0') {
                *why = pre ? "url must have a host" : "url must be an absolute http:// or https:// URL";
                return URL_BAD;
        }
        CURLU *u = curl_url();
        char *scheme = NULL, *host = NULL;
        url_check rc = URL_BAD;
        if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
            curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK) {
                *why = "url must be an absolute http:// or https:// URL";
        } else if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
                *why = "url must use http or https";
        } else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
                *why = "url must have a host";
        } else if (ip_literal(host, ip) && !relay_conf_bool(wh_self, "allow_private_targets") &&
                   !relay_ip_is_public(ip)) {
                *why = "url points at a private, loopback or link-local address";
                rc = URL_PRIVATE;
        } else {
                rc = URL_OK;
        }
        curl_free(scheme);
        curl_free(host);
        curl_url_cleanup(u);
        return rc;
}

/* "*", "record.synced", "record.*": lowercase words of [a-z0-9_-] joined
 * by dots, and "*" only as the whole last word (what relay_event_matches
 * understands; "rec*" would silently never match). */
static bool pattern_valid(const char *s)
{
        size_t n = strlen(s);
        if (n == 0 || n > MAX_PATTERN_LEN || s[0] == '.' || s[n - 1] == '.' || strstr(s, ".."))
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (c == '*') {
                        if (i != n - 1 || (i > 0 && s[i - 1] != '.'))
                                return false;
                } else if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.')) {
                        return false;
                }
        }
        return true;
}

/* Checks BODY's members (POST: url and events required); validation
 * failures go to *ERRORS, a private URL to *PRIVATE (its message). */
static void validate(const json_t *body, bool patch, json_t **errors, const char **private_why)
{
        const char *key;
        const json_t *v;
        json_object_foreach((json_t *)body, key, v)
        {
                if (strcmp(key, "url") && strcmp(key, "events") && strcmp(key, "description") &&
                    (!patch || strcmp(key, "enabled")))
                        relay_validation_add(errors, "body", key, "unknown field", "extra_forbidden");
        }
        v = json_object_get(body, "url");
        if (!v) {
                if (!patch)
                        relay_validation_add(errors, "body", "url", "url is required", "missing");
        } else if (!json_is_string(v)) {
                relay_validation_add(errors, "body", "url", "url must be a string", "string_type");
        } else {
                const char *why;
                char ip[INET6_ADDRSTRLEN];
                url_check c = check_url(json_string_value(v), &why, ip);
                if (c == URL_BAD)
                        relay_validation_add(errors, "body", "url", why, "value_error");
                else if (c == URL_PRIVATE)
                        *private_why = why;
        }
        v = json_object_get(body, "events");
        if (!v) {
                if (!patch)
                        relay_validation_add(errors, "body", "events", "events is required", "missing");
        } else if (!json_is_array(v) || json_array_size(v) == 0 || json_array_size(v) > MAX_PATTERNS) {
                relay_validation_add(errors, "body", "events", "events must be a list of 1 to 50 event patterns",
                                     "list_type");
        } else {
                size_t i;
                const json_t *item;
                json_array_foreach(v, i, item)
                {
                        if (!json_is_string(item) || !pattern_valid(json_string_value(item))) {
                                relay_validation_add(errors, "body", "events",
                                                     "each event pattern is a type (record.synced), a prefix "
                                                     "(record.*) or *: lowercase letters, digits, _ - and dots",
                                                     "value_error");
                                break;
                        }
                }
        }
        v = json_object_get(body, "description");
        if (v && !json_is_null(v) && (!json_is_string(v) || json_string_length(v) > MAX_DESCRIPTION))
                relay_validation_add(errors, "body", "description",
                                     "description must be a string of at most 500 characters, or null", "string_type");
        v = json_object_get(body, "enabled");
        if (v && !json_is_boolean(v))
                relay_validation_add(errors, "body", "enabled", "enabled must be true or false", "bool_type");
}

/* Answers a failed validation; true when it did. */
static bool refuse(relay_req *req, json_t *errors, const char *private_why)
{
        if (errors)
                return relay_error_validation(req, errors), true;
        if (private_why) {
                relay_error_json(req, 422, "webhook.private_target", private_why, json_pack("{s:s}", "field", "url"));
                return true;
        }
        return false;
}

/* ---------------------------------------------------------------- routes */

static int not_found(relay_req *req)
{
        /* not echoed: the client's bytes need not be UTF-8 */
        return relay_error(req, 404, "webhook.not_found", "no such webhook endpoint");
}

/* The endpoint ID of the caller's tenant as JSON, with "secret" = TEXT
 * when given; 404 when there is none. */
static int reply_endpoint(relay_req *req, int status, const char *id, const char *secret)
{
        relay_db_result *r;
        int rc = wh_endpoint_load(relay_db_of(req), relay_principal_of(req)->tenant, id, &r);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        json_t *doc = relay_db_next(r) ? wh_endpoint_json(r) : NULL;
        relay_db_free(r);
        if (!doc)
                return not_found(req);
        if (secret)
                json_object_set_new(doc, "secret", json_string(secret));
        return relay_reply_json(req, status, doc);
}

static int post_endpoint(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        json_t *errors = NULL;
        const char *private_why = NULL;
        validate(body, false, &errors, &private_why);
        if (refuse(req, errors, private_why))
                return RELAY_OK;
        relay_db *db = relay_db_of(req);
        const char *tenant = relay_principal_of(req)->tenant;
        relay_db_result *r;
        int rc = relay_db_query(db, &r, "SELECT COUNT(*) FROM webhooks_endpoints WHERE tenant = ?", "s", tenant);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        int64_t count = relay_db_next(r) ? relay_db_int(r, 0) : 0;
        relay_db_free(r);
        int64_t max = relay_conf_int(wh_self, "max_endpoints");
        if (max > 0 && count >= max)
                return relay_error_json(req, 422, "webhook.limit", "this organization has the most endpoints allowed",
                                        json_pack("{s:I}", "max_endpoints", (json_int_t)max));
        uint8_t key[WH_KEY_BYTES];
        char secret[WH_SECRET_LEN], id[WH_ID_LEN];
        wh_secret_new(key, secret);
        char *sealed = wh_secret_seal(key);
        sodium_memzero(key, sizeof(key));
        if (!sealed) {
                sodium_memzero(secret, sizeof(secret));
                return relay_error(req, 503, "unavailable", "the webhooks key is not loaded; retry shortly");
        }
        relay_id_new("wh_", id, sizeof(id));
        int64_t now = relay_now_ms();
        const json_t *desc = json_object_get(body, "description");
        rc = relay_db_exec(db, NULL,
                           "INSERT INTO webhooks_endpoints (tenant, id, url, events, description, enabled,"
                           " disabled_reason, consecutive_failures, secret, old_secret, old_secret_until,"
                           " created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, 1, NULL, 0, ?, NULL, NULL, ?, ?)",
                           "sssjssii", tenant, id, json_string_value(json_object_get(body, "url")),
                           json_object_get(body, "events"), json_string_value(desc), sealed, now, now);
        free(sealed);
        if (rc != RELAY_DB_OK) {
                sodium_memzero(secret, sizeof(secret));
                return relay_db_reply_error(req, rc);
        }
        rc = reply_endpoint(req, 201, id, secret);
        sodium_memzero(secret, sizeof(secret));
        return rc;
}

static int get_endpoints(relay_req *req)
{
        bool bad = false;
        long limit = relay_query_limit(req, "limit", 50, 200, &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to 200");
        json_t *cursor;
        if (relay_query_cursor(req, "cursor", &cursor) != RELAY_OK)
                return RELAY_OK;
        const char *after = json_string_value(json_object_get(cursor, "id"));
        if (cursor && !wh_endpoint_id_valid(after))
                return relay_error(req, 400, "invalid_cursor", "cursor is not one this server gave");
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT " WH_ENDPOINT_COLUMNS " FROM webhooks_endpoints WHERE tenant = ?"
                                " AND (CAST(? AS TEXT) IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
                                "sssi", relay_principal_of(req)->tenant, after, after, (int64_t)limit + 1);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        return relay_reply_page(req, r, "webhooks", limit, wh_endpoint_json);
}

static int get_endpoint(relay_req *req)
{
        const char *id = relay_param(req, "id");
        if (!wh_endpoint_id_valid(id))
                return not_found(req);
        return reply_endpoint(req, 200, id, NULL);
}

static int patch_endpoint(relay_req *req)
{
        const char *id = relay_param(req, "id"), *tenant = relay_principal_of(req)->tenant;
        if (!wh_endpoint_id_valid(id))
                return not_found(req);
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        json_t *errors = NULL;
        const char *private_why = NULL;
        validate(body, true, &errors, &private_why);
        if (refuse(req, errors, private_why))
                return RELAY_OK;
        const json_t *url = json_object_get(body, "url"), *events = json_object_get(body, "events");
        const json_t *desc = json_object_get(body, "description"), *enabled = json_object_get(body, "enabled");
        int64_t now = relay_now_ms(), changes = 0;
        /* enabled:true re-enables (and forgets past failures); enabled:false
         * disables until the owner says otherwise */
        int rc = relay_db_exec(relay_db_of(req), &changes,
                               "UPDATE webhooks_endpoints SET url = COALESCE(?, url), events = COALESCE(?, events),"
                               " description = CASE WHEN ? = 1 THEN ? ELSE description END,"
                               " enabled = CASE WHEN ? = 1 THEN 1 WHEN ? = 1 THEN 0 ELSE enabled END,"
                               " disabled_reason = CASE WHEN ? = 1 THEN NULL WHEN ? = 1 AND enabled = 1"
                               " THEN 'disabled by the user' ELSE disabled_reason END,"
                               " consecutive_failures = CASE WHEN ? = 1 THEN 0 ELSE consecutive_failures END,"
                               " updated_ms = ? WHERE tenant = ? AND id = ?",
                               "sjisiiiiiiss", json_string_value(url), events, (int64_t)(desc != NULL),
                               json_string_value(desc), (int64_t)json_is_true(enabled), (int64_t)json_is_false(enabled),
                               (int64_t)json_is_true(enabled), (int64_t)json_is_false(enabled),
                               (int64_t)json_is_true(enabled), now, tenant, id);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (changes == 0)
                return not_found(req);
        return reply_endpoint(req, 200, id, NULL);
}

static int delete_endpoint(relay_req *req)
{
        const char *id = relay_param(req, "id"), *tenant = relay_principal_of(req)->tenant;
        if (!wh_endpoint_id_valid(id))
                return not_found(req);
        relay_db *db = relay_db_of(req);
        int64_t changes = 0;
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, &changes, "DELETE FROM webhooks_endpoints WHERE tenant = ? AND id = ?", "ss",
                                   tenant, id);
        /* the log goes with the endpoint; queued deliveries fail when they run */
        if (rc == RELAY_DB_OK && changes)
                rc = relay_db_exec(db, NULL, "DELETE FROM webhooks_attempts WHERE tenant = ? AND endpoint_id = ?", "ss",
                                   tenant, id);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (changes == 0)
                return not_found(req);
        return relay_reply_empty(req, 204);
}

static int post_rotate(relay_req *req)
{
        const char *id = relay_param(req, "id"), *tenant = relay_principal_of(req)->tenant;
        if (!wh_endpoint_id_valid(id))
                return not_found(req);
        uint8_t key[WH_KEY_BYTES];
        char secret[WH_SECRET_LEN];
        wh_secret_new(key, secret);
        char *sealed = wh_secret_seal(key);
        sodium_memzero(key, sizeof(key));
        if (!sealed) {
                sodium_memzero(secret, sizeof(secret));
                return relay_error(req, 503, "unavailable", "the webhooks key is not loaded; retry shortly");
        }
        int64_t now = relay_now_ms(), grace = (int64_t)relay_conf_duration_ms(wh_self, "rotation_grace"), changes = 0;
        /* the current secret keeps signing (second) until the grace ends */
        int rc = relay_db_exec(relay_db_of(req), &changes,
                               "UPDATE webhooks_endpoints SET old_secret = CASE WHEN ? > 0 THEN secret ELSE NULL END,"
                               " old_secret_until = CASE WHEN ? > 0 THEN ? ELSE NULL END, secret = ?, updated_ms = ?"
                               " WHERE tenant = ? AND id = ?",
                               "iiisiss", grace, grace, now + grace, sealed, now, tenant, id);
        free(sealed);
        if (rc == RELAY_DB_OK && changes)
                rc = reply_endpoint(req, 200, id, secret);
        else
                rc = rc != RELAY_DB_OK ? relay_db_reply_error(req, rc) : not_found(req);
        sodium_memzero(secret, sizeof(secret));
        return rc;
}

int wh_endpoints_register(relay_plugin *p)
{
        if (relay_route_role(p, "POST", "/v1/webhooks", post_endpoint, "admin") ||
            relay_route_role(p, "GET", "/v1/webhooks", get_endpoints, "admin operator") ||
            relay_route_role(p, "GET", "/v1/webhooks/:id", get_endpoint, "admin operator") ||
            relay_route_role(p, "PATCH", "/v1/webhooks/:id", patch_endpoint, "admin") ||
            relay_route_role(p, "DELETE", "/v1/webhooks/:id", delete_endpoint, "admin") ||
            relay_route_role(p, "POST", "/v1/webhooks/:id/rotate", post_rotate, "admin"))
                return RELAY_ERR;
        return RELAY_OK;
}
