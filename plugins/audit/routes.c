/* routes.c - reading the audit log.
 *
 *   GET /v1/audit                 RelaySync: entries, newest first, filtered
 *   GET /v1/audit/events          RelayOne: the same entries as "events"
 *   GET /v1/audit/events/:id      one entry with its signed receipt
 *   GET /v1/audit/verify          checks the tenant's whole chain now
 *   GET /v1/audit/key             the public key that signs
 *
 * Both lists take the same filters (type, kind, actor or user, target,
 * model, policy, since or from, until or to) and an opaque cursor.  There
 * is no route that changes or deletes an entry. */
#include <stdlib.h>
#include <string.h>
#include "audit.h"

/* ------------------------------------------------------------ filters */

typedef struct filters {
        const char *kind, *actor, *target, *model, *policy;
        char type_like[140]; /* "" for none */
        int64_t since, until, before_seq;
        long limit;
} filters;

bool audit_type_pattern_ok(const char *t)
{
        size_t n = strlen(t);
        if (n == 0 || n > 64)
                return false;
        for (const char *c = t; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '.' || *c == '-' ||
                      *c == '*'))
                        return false;
        return strchr(t, '*') == NULL || strcmp(t, "*") == 0 ||
               (n >= 2 && strcmp(t + n - 2, ".*") == 0 && strchr(t, '*') == t + n - 1);
}

/* "record.*" -> "record.%", "user_x" -> "user!_x": LIKE with '!' escaping. */
static void type_like(const char *t, char *out, size_t len)
{
        size_t o = 0, n = strlen(t);
        bool prefix = n >= 2 && strcmp(t + n - 2, ".*") == 0;
        size_t stop = prefix ? n - 1 : n;
        for (size_t i = 0; i < stop && o + 3 < len; i++) {
                if (t[i] == '_' || t[i] == '%' || t[i] == '!')
                        out[o++] = '!';
                out[o++] = t[i];
        }
        if (prefix && o + 1 < len)
                out[o++] = '%';
        out[o] = '\0';
}

static const char *either(relay_req *req, const char *a, const char *b)
{
        const char *v = relay_query(req, a);
        return v ? v : relay_query(req, b);
}

static void time_param(relay_req *req, const char *a, const char *b, int64_t *out, bool *bad)
{
        const char *v = either(req, a, b);
        if (v && relay_time_parse(v, out) != RELAY_OK)
                *bad = true;
}

/* Reads the filters; on a bad one replies 400 and returns RELAY_ERR. */
static int read_filters(relay_req *req, filters *f)
{
        memset(f, 0, sizeof(*f));
        f->until = INT64_MAX;
        f->before_seq = INT64_MAX;
        f->kind = relay_query(req, "kind");
        f->actor = either(req, "actor", "user");
        f->target = relay_query(req, "target");
        f->model = relay_query(req, "model");
        f->policy = relay_query(req, "policy");
        const char *type = relay_query(req, "type");
        if (f->kind && strcmp(f->kind, "event") != 0 && strcmp(f->kind, "request") != 0)
                return relay_error(req, 400, "invalid_kind", "kind must be event or request"), RELAY_ERR;
        if (type && !audit_type_pattern_ok(type))
                return relay_error(req, 400, "invalid_type", "type must be an event type or a pattern like record.*"),
                       RELAY_ERR;
        if (type && strcmp(type, "*") != 0)
                type_like(type, f->type_like, sizeof(f->type_like));
        bool bad_since = false, bad_until = false;
        time_param(req, "since", "from", &f->since, &bad_since);
        time_param(req, "until", "to", &f->until, &bad_until);
        if (bad_since || bad_until)
                return relay_error(req, 400, bad_since ? "invalid_since" : "invalid_until",
                                   "since/from and until/to must be RFC 3339 times"),
                       RELAY_ERR;
        bool bad = false;
        f->limit = relay_query_limit(req, "limit", 50, (long)relay_conf_int(audit_self, "max_page_size"), &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to %lld",
                                   (long long)relay_conf_int(audit_self, "max_page_size")),
                       RELAY_ERR;
        json_t *cursor;
        if (relay_query_cursor(req, "cursor", &cursor) != RELAY_OK)
                return RELAY_ERR;
        if (cursor) {
                json_t *s = json_object_get(cursor, "s");
                if (!json_is_integer(s))
                        return relay_error(req, 400, "invalid_cursor", "cursor is not one this server gave"), RELAY_ERR;
                f->before_seq = json_integer_value(s);
        }
        return RELAY_OK;
}

static int list_entries(relay_req *req, const char *key)
{
        filters f;
        if (read_filters(req, &f) != RELAY_OK)
                return RELAY_OK;
        const char *like = f.type_like[0] ? f.type_like : NULL;
        relay_db_result *r;
        int rc = relay_db_query(
                relay_db_of(req), &r,
                "SELECT seq, body, prev_hash, hash FROM audit_entries WHERE tenant = ? AND seq < ? AND time_ms >= ?"
                " AND time_ms <= ? AND (CAST(? AS TEXT) IS NULL OR kind = ?) AND (CAST(? AS TEXT) IS NULL OR actor = ?)"
                " AND (CAST(? AS TEXT) IS NULL OR target = ?) AND (CAST(? AS TEXT) IS NULL OR model = ?)"
                " AND (CAST(? AS TEXT) IS NULL OR policy = ?) AND (CAST(? AS TEXT) IS NULL OR type LIKE ? ESCAPE '!')"
                " ORDER BY seq DESC LIMIT ?",
                "siiissssssssssssi", relay_principal_of(req)->tenant, f.before_seq, f.since, f.until, f.kind, f.kind,
                f.actor, f.actor, f.target, f.target, f.model, f.model, f.policy, f.policy, like, like,
                (int64_t)f.limit + 1);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        json_t *list = json_array();
        int64_t last = 0;
        bool more = false;
        while (relay_db_next(r)) {
                if ((long)json_array_size(list) == f.limit) {
                        more = true;
                        break;
                }
                char *text = audit_entry_text(relay_db_text(r, 1), relay_db_text(r, 2), relay_db_text(r, 3));
                json_t *e = text ? json_loads(text, 0, NULL) : NULL;
                free(text);
                if (e)
                        json_array_append_new(list, e);
                last = relay_db_int(r, 0);
        }
        relay_db_free(r);
        json_t *out = json_pack("{s:o,s:n}", key, list, "next_cursor");
        if (more) {
                char cur[RELAY_CURSOR_MAX];
                json_t *state = json_pack("{s:I}", "s", (json_int_t)last);
                if (relay_cursor_encode(state, cur, sizeof(cur)) == RELAY_OK)
                        json_object_set_new(out, "next_cursor", json_string(cur));
                json_decref(state);
        }
        return relay_reply_json(req, 200, out);
}

static int get_audit(relay_req *req) { return list_entries(req, "entries"); }
static int get_events(relay_req *req) { return list_entries(req, "events"); }

/* ------------------------------------------------------------ one entry */

static json_t *latest_checkpoint(relay_db *db, const char *tenant, int64_t seq)
{
        relay_db_result *r;
        json_t *c = json_null();
        if (relay_db_query(db, &r,
                           "SELECT seq, hash, time_ms, key_id, signature FROM audit_checkpoints WHERE tenant = ? AND "
                           "seq >= ? ORDER BY seq LIMIT 1",
                           "si", tenant, seq) == RELAY_DB_OK &&
            relay_db_next(r)) {
                char when[40];
                json_decref(c);
                c = json_pack("{s:I,s:s,s:s,s:I,s:s,s:s}", "seq", (json_int_t)relay_db_int(r, 0), "hash",
                              relay_db_text(r, 1), "time", relay_time_format(relay_db_int(r, 2), when, sizeof(when)),
                              "time_ms", (json_int_t)relay_db_int(r, 2), "key_id", relay_db_text(r, 3), "signature",
                              relay_db_text(r, 4));
        }
        relay_db_free(r);
        return c;
}

static json_t *receipt(relay_db *db, const char *tenant, int64_t seq, const char *id, const char *body,
                       const char *prev, const char *hash)
{
        char stmt[256], sig[100], body_sha[65];
        audit_receipt_statement(stmt, sizeof(stmt), tenant, seq, hash);
        audit_sign(stmt, strlen(stmt), sig, sizeof(sig));
        audit_sha256_hex(body, strlen(body), body_sha);
        /* "body": the exact bytes hashed, so a client can check the chain
         * without re-serialising the entry (JSON writers differ on reals) */
        return json_pack("{s:s,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "entry_id", id, "seq", (json_int_t)seq,
                         "hash", hash, "prev_hash", prev, "body", body, "body_sha256", body_sha, "algorithm", "ed25519",
                         "key_id", audit_signing_key.key_id, "public_key", audit_signing_key.pk_b64, "statement", stmt,
                         "signature", sig, "checkpoint", latest_checkpoint(db, tenant, seq));
}

static int get_event(relay_req *req)
{
        const char *tenant = relay_principal_of(req)->tenant, *id = relay_param(req, "id");
        relay_db *db = relay_db_of(req);
        relay_db_result *r;
        int rc = relay_db_query(db, &r,
                                "SELECT seq, body, prev_hash, hash FROM audit_entries WHERE tenant = ? AND id = ?",
                                "ss", tenant, id);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (!relay_db_next(r)) {
                relay_db_free(r);
                return relay_error(req, 404, "audit.not_found", "no audit event %s", id);
        }
        char *text = audit_entry_text(relay_db_text(r, 1), relay_db_text(r, 2), relay_db_text(r, 3));
        json_t *entry = text ? json_loads(text, 0, NULL) : NULL;
        free(text);
        json_t *out = json_pack("{s:o,s:o}", "event", entry ? entry : json_null(), "receipt",
                                receipt(db, tenant, relay_db_int(r, 0), id, relay_db_text(r, 1), relay_db_text(r, 2),
                                        relay_db_text(r, 3)));
        relay_db_free(r);
        return relay_reply_json(req, 200, out);
}

/* ------------------------------------------------------------ verify, key */

json_t *audit_verify_json(const audit_verify_result *v)
{
        json_t *bad = v->ok || !v->bad_seq ? json_null()
                                           : json_pack("{s:I,s:s?}", "seq", (json_int_t)v->bad_seq, "id",
                                                       v->bad_id[0] ? v->bad_id : NULL);
        return json_pack("{s:b,s:I,s:I,s:I,s:o,s:s,s:s}", "valid", v->ok, "entries", (json_int_t)v->entries, "redacted",
                         (json_int_t)v->redacted, "checkpoints", (json_int_t)v->checkpoints, "first_bad", bad,
                         "message", v->message, "key_id", v->key_id);
}

static int get_verify(relay_req *req)
{
        audit_verify_result v;
        int rc = audit_verify_chain(relay_db_of(req), relay_principal_of(req)->tenant, &v);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        return relay_reply_json(req, 200, audit_verify_json(&v));
}

static int get_key(relay_req *req)
{
        return relay_reply_json(req, 200,
                                json_pack("{s:s,s:s,s:s}", "algorithm", "ed25519", "key_id", audit_signing_key.key_id,
                                          "public_key", audit_signing_key.pk_b64));
}

int audit_routes_register(relay_plugin *p)
{
        if (relay_route_role(p, "GET", "/v1/audit", get_audit, "admin") ||
            relay_route_role(p, "GET", "/v1/audit/events", get_events, "admin") ||
            relay_route_role(p, "GET", "/v1/audit/events/:id", get_event, "admin") ||
            relay_route_role(p, "GET", "/v1/audit/verify", get_verify, "admin") ||
            relay_route_role(p, "GET", "/v1/audit/key", get_key, "admin"))
                return RELAY_ERR;
        return RELAY_OK;
}
