/* bundles.c - RelayOne's evidence bundles.
 *
 *   POST /v1/evidence/bundles            {"from","to","components"?} -> 201, assembled now
 *   GET  /v1/evidence/bundles            the tenant's bundles, newest first
 *   GET  /v1/evidence/bundles/:id        the tar.gz
 *   GET  /v1/evidence/bundles/:id/verify the server's verdict on the stored bytes
 *
 * Bundles are stored in the database (not data_dir), so any daemon of a
 * shared database serves them. */
#include <stdlib.h>
#include <string.h>
#include "audit.h"

#define SUMMARY_COLUMNS "id, from_ms, to_ms, components, entries, first_seq, last_seq, sha256, size, created_ms"

/* A bundle row (SUMMARY_COLUMNS) as the API shows it. */
static json_t *summary_json(relay_db_result *r)
{
        char from[40], to[40], created[40], url[96], verify[112];
        const char *id = relay_db_text(r, 0);
        snprintf(url, sizeof(url), "/v1/evidence/bundles/%s", id);
        snprintf(verify, sizeof(verify), "%s/verify", url);
        json_t *components = relay_db_json(r, 3);
        return json_pack("{s:s,s:s,s:s,s:s,s:o,s:I,s:I,s:I,s:s,s:I,s:s,s:s,s:s}", "id", id, "status", "ready", "from",
                         relay_time_format(relay_db_int(r, 1), from, sizeof(from)), "to",
                         relay_time_format(relay_db_int(r, 2), to, sizeof(to)), "components",
                         components ? components : json_null(), "entries", (json_int_t)relay_db_int(r, 4), "first_seq",
                         (json_int_t)relay_db_int(r, 5), "last_seq", (json_int_t)relay_db_int(r, 6), "sha256",
                         relay_db_text(r, 7), "size", (json_int_t)relay_db_int(r, 8), "created_at",
                         relay_time_format(relay_db_int(r, 9), created, sizeof(created)), "download_url", url,
                         "verify_url", verify);
}

static bool component_ok(json_t *c)
{
        const char *s = json_string_value(c);
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > 32)
                return false;
        for (; *s; s++)
                if (!((*s >= 'a' && *s <= 'z') || *s == '_' || (*s >= '0' && *s <= '9')))
                        return false;
        return true;
}

/* Reads and checks the body; replies 422 and returns RELAY_ERR when bad. */
static int read_request(relay_req *req, json_t *body, int64_t *from, int64_t *to, json_t **components)
{
        json_t *items = NULL;
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v) if (strcmp(key, "from") && strcmp(key, "to") && strcmp(key, "components"))
                relay_validation_add(&items, "body", key, "unknown field", "value_error.extra");
        const char *names[2] = {"from", "to"};
        int64_t *outs[2] = {from, to};
        for (int i = 0; i < 2; i++) {
                const char *s = json_string_value(json_object_get(body, names[i]));
                if (!s || relay_time_parse(s, outs[i]) != RELAY_OK)
                        relay_validation_add(&items, "body", names[i], "must be an RFC 3339 time", "value_error.time");
        }
        if (!items && *from > *to)
                relay_validation_add(&items, "body", "to", "must not be before from", "value_error.range");
        *components = json_object_get(body, "components");
        if (json_is_null(*components))
                *components = NULL;
        if (*components) {
                size_t i;
                json_t *c;
                bool ok = json_is_array(*components) && json_array_size(*components) > 0 &&
                          json_array_size(*components) <= 32;
                json_array_foreach(*components, i, c) ok = ok && component_ok(c);
                if (!ok)
                        relay_validation_add(&items, "body", "components",
                                             "must be a non-empty list of up to 32 names such as \"requests\", "
                                             "\"events\" or an event family (\"record\", \"policy\")",
                                             "value_error.components");
        }
        if (items) {
                relay_error_validation(req, items);
                return RELAY_ERR;
        }
        return RELAY_OK;
}

static int post_bundle(relay_req *req)
{
        json_t *body = relay_json_body(req), *components;
        int64_t from = 0, to = 0;
        if (!body || read_request(req, body, &from, &to, &components) != RELAY_OK)
                return RELAY_OK;
        const relay_principal *who = relay_principal_of(req);
        relay_db *db = relay_db_of(req);
        char id[48], err[200] = "", sha[65];
        relay_id_new("evb_", id, sizeof(id));
        unsigned char *data = NULL;
        size_t len = 0;
        json_t *summary = NULL;
        int rc = audit_bundle_build(db, id, who->tenant, from, to, components, &data, &len, &summary, err, sizeof(err));
        if (rc == RELAY_ERR)
                return relay_error(req, 422, "evidence.range_too_large", "%s", err);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        audit_sha256_hex(data, len, sha);
        char *comp_text = components ? json_dumps(components, JSON_COMPACT) : NULL;
        rc = relay_db_exec(db, NULL,
                           "INSERT INTO audit_bundles (id, tenant, from_ms, to_ms, components, entries, first_seq,"
                           " last_seq, sha256, size, created_ms, created_by, data)"
                           " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           "ssiisiiisiisb", id, who->tenant, from, to, comp_text,
                           (int64_t)json_integer_value(json_object_get(summary, "entries")),
                           (int64_t)json_integer_value(json_object_get(summary, "first_seq")),
                           (int64_t)json_integer_value(json_object_get(summary, "last_seq")), sha, (int64_t)len,
                           relay_now_ms(), who->subject, data, len);
        free(comp_text), free(data), json_decref(summary);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        relay_db_result *r;
        rc = relay_db_query(db, &r, "SELECT " SUMMARY_COLUMNS " FROM audit_bundles WHERE id = ?", "s", id);
        if (rc != RELAY_DB_OK || !relay_db_next(r)) {
                relay_db_free(r);
                return relay_db_reply_error(req, rc != RELAY_DB_OK ? rc : RELAY_DB_ERROR);
        }
        json_t *out = summary_json(r);
        relay_db_free(r);
        return relay_reply_json(req, 201, out);
}

static int list_bundles(relay_req *req)
{
        bool bad = false;
        long limit = relay_query_limit(req, "limit", 50, 200, &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to 200");
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT " SUMMARY_COLUMNS
                                " FROM audit_bundles WHERE tenant = ? ORDER BY id DESC LIMIT ?",
                                "si", relay_principal_of(req)->tenant, (int64_t)limit);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        json_t *list = json_array();
        while (relay_db_next(r))
                json_array_append_new(list, summary_json(r));
        relay_db_free(r);
        return relay_reply_json(req, 200, json_pack("{s:o}", "bundles", list));
}

/* The stored bytes of the request's bundle, or a 404/5xx reply (NULL). */
static relay_db_result *load_bundle(relay_req *req, const void **data, size_t *len)
{
        relay_db_result *r;
        const char *id = relay_param(req, "id");
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT data, sha256 FROM audit_bundles WHERE tenant = ? AND id = ?", "ss",
                                relay_principal_of(req)->tenant, id);
        if (rc != RELAY_DB_OK) {
                relay_db_reply_error(req, rc);
                return NULL;
        }
        if (!relay_db_next(r)) {
                relay_db_free(r);
                relay_error(req, 404, "evidence.not_found", "no evidence bundle %s", id);
                return NULL;
        }
        *data = relay_db_blob(r, 0, len);
        return r;
}

static int get_bundle(relay_req *req)
{
        const void *data;
        size_t len;
        relay_db_result *r = load_bundle(req, &data, &len);
        if (!r)
                return RELAY_OK;
        char disposition[128];
        snprintf(disposition, sizeof(disposition), "attachment; filename=\"%s.tar.gz\"", relay_param(req, "id"));
        relay_set_header(req, "Content-Disposition", disposition);
        int rc = relay_reply(req, 200, "application/gzip", data, len);
        relay_db_free(r);
        return rc;
}

static int verify_bundle(relay_req *req)
{
        const void *data;
        size_t len;
        relay_db_result *r = load_bundle(req, &data, &len);
        if (!r)
                return RELAY_OK;
        audit_verify_result v;
        audit_verify_bundle(data, len, audit_signing_key.pk, &v);
        char sha[65];
        audit_sha256_hex(data, len, sha);
        bool same = strcmp(sha, relay_db_text(r, 1)) == 0;
        relay_db_free(r);
        json_t *out = audit_verify_json(&v);
        json_object_set_new(out, "bundle_id", json_string(relay_param(req, "id")));
        json_object_set_new(out, "sha256", json_string(sha));
        json_object_set_new(out, "sha256_matches_record", json_boolean(same));
        if (!same)
                json_object_set_new(out, "valid", json_false());
        return relay_reply_json(req, 200, out);
}

int audit_bundles_register(relay_plugin *p)
{
        if (relay_route_role(p, "POST", "/v1/evidence/bundles", post_bundle, "admin") ||
            relay_route_role(p, "GET", "/v1/evidence/bundles", list_bundles, "admin") ||
            relay_route_role(p, "GET", "/v1/evidence/bundles/:id", get_bundle, "admin") ||
            relay_route_role(p, "GET", "/v1/evidence/bundles/:id/verify", verify_bundle, "admin"))
                return RELAY_ERR;
        return RELAY_OK;
}
