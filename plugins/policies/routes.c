/* routes.c - RelaySync's policy routes (RelayOne's YAML shape will share
 * the same table and path):
 *   GET    /v1/policies                 the tenant's live policies, by priority then name (bytes)
 *   POST   /v1/policies                 {"name","when","then"[,"priority"]}: create or update by name
 *   GET    /v1/policies/:id             one policy
 *   DELETE /v1/policies/:id             soft delete
 *   POST   /v1/policies/:id/dryrun      {"record":{...}}: would it match, and what would it do */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "policies.h"

#define PRIORITY_DEFAULT 100
#define PRIORITY_MAX 100000

static const char *const body_fields[] = {"name", "when", "then", "priority", NULL};

json_t *policy_json(relay_db_result *r)
{
        char created[40], updated[40], deleted[40];
        return json_pack("{s:s,s:s,s:I,s:I,s:s,s:s,s:s,s:s,s:s?}", "id", relay_db_text(r, 0), "name",
                         relay_db_text(r, 1), "version", (json_int_t)relay_db_int(r, 2), "priority",
                         (json_int_t)relay_db_int(r, 3), "when", relay_db_text(r, 4), "then", relay_db_text(r, 5),
                         "created_at", relay_time_format(relay_db_int(r, 6), created, sizeof(created)), "updated_at",
                         relay_time_format(relay_db_int(r, 7), updated, sizeof(updated)), "deleted_at",
                         relay_db_is_null(r, 8) ? NULL
                                                : relay_time_format(relay_db_int(r, 8), deleted, sizeof(deleted)));
}

static bool name_valid(const char *s)
{
        size_t n = s ? strlen(s) : 0;
        return n > 0 && n <= POLICY_NAME_MAX &&
               strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

static int get_policies(relay_req *req)
{
        relay_db_result *r;
        relay_db *db = relay_db_of(req);
#define LIST_SQL "SELECT " POLICY_COLUMNS " FROM policies_policies WHERE tenant = ? AND deleted_ms IS NULL"
        int rc = relay_db_query(db, &r,
                                POLICIES_IS_PGSQL(db) ? LIST_SQL POLICIES_ORDER_PGSQL : LIST_SQL POLICIES_ORDER_BYTES,
                                "s", relay_principal_of(req)->tenant);
#undef LIST_SQL
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        json_t *list = json_array();
        while (relay_db_next(r))
                json_array_append_new(list, policy_json(r));
        relay_db_free(r);
        return relay_reply_json(req, 200, json_pack("{s:o}", "policies", list));
}

/* Is S shaped like a policy id (pol_ + 26 Crockford base32, as publish
 * makes them)?  Anything else names no policy, and must not reach the
 * database: PostgreSQL refuses a parameter that is not UTF-8 (a 500). */
static bool id_valid(const char *s)
{
        return s && strlen(s) == 4 + RELAY_ULID_LEN && strncmp(s, "pol_", 4) == 0 &&
               strspn(s + 4, "0123456789ABCDEFGHJKMNPQRSTVWXYZ") == RELAY_ULID_LEN;
}

/* The policy ID (or NAME when ID is NULL) of the caller's tenant. */
static int load(relay_db *db, const char *tenant, const char *id, const char *name, json_t **out)
{
        relay_db_result *r;
        *out = NULL;
        if (id && !id_valid(id))
                return RELAY_DB_OK;
        int rc = relay_db_query(db, &r,
                                id ? "SELECT " POLICY_COLUMNS " FROM policies_policies WHERE tenant = ? AND id = ?"
                                   : "SELECT " POLICY_COLUMNS " FROM policies_policies WHERE tenant = ? AND name = ?",
                                "ss", tenant, id ? id : name);
        if (rc == RELAY_DB_OK && relay_db_next(r))
                *out = policy_json(r);
        relay_db_free(r);
        return rc;
}

/* Checks a POST body; replies and returns false when it is not acceptable. */
static bool valid_body(relay_req *req, const json_t *body)
{
        json_t *errors = NULL, *fault = NULL;
        const char *key;
        json_t *v;
        json_object_foreach((json_t *)body, key, v)
        {
                bool ok = false;
                for (int i = 0; body_fields[i]; i++)
                        ok = ok || strcmp(key, body_fields[i]) == 0;
                if (!ok)
                        relay_validation_add(&errors, "body", key, "unknown field", "value_error");
        }
        const char *name = json_string_value(json_object_get(body, "name"));
        const char *when = json_string_value(json_object_get(body, "when"));
        const char *then = json_string_value(json_object_get(body, "then"));
        const json_t *prio = json_object_get(body, "priority");
        if (!name_valid(name))
                relay_validation_add(&errors, "body", "name", "name must be 1 to 64 characters of A-Z a-z 0-9 _ . -",
                                     "value_error");
        if (!when)
                relay_validation_add(&errors, "body", "when", "when must be an expression string", "value_error");
        if (!then)
                relay_validation_add(&errors, "body", "then", "then must be an action string", "value_error");
        if (prio && (!json_is_integer(prio) || json_integer_value(prio) < 0 || json_integer_value(prio) > PRIORITY_MAX))
                relay_validation_add(&errors, "body", "priority", "priority must be an integer from 0 to 100000",
                                     "value_error");
        if (errors) {
                relay_error_validation(req, errors);
                return false;
        }
        if (!policies_check(when, then, &fault)) {
                relay_error_object(req, 422, fault);
                return false;
        }
        return true;
}

static int live_count(relay_db *db, const char *tenant, int64_t *n)
{
        relay_db_result *r;
        int rc = relay_db_query(
                db, &r, "SELECT COUNT(*) FROM policies_policies WHERE tenant = ? AND deleted_ms IS NULL", "s", tenant);
        *n = rc == RELAY_DB_OK && relay_db_next(r) ? relay_db_int(r, 0) : 0;
        relay_db_free(r);
        return rc;
}

/* Writes version VERSION of the policy; STATUS 201 new, 200 updated. */
static int publish(relay_req *req, relay_db *db, const json_t *body, json_t *existing, int *status)
{
        const char *tenant = relay_principal_of(req)->tenant;
        const char *name = json_string_value(json_object_get(body, "name"));
        const char *when = json_string_value(json_object_get(body, "when"));
        const char *then = json_string_value(json_object_get(body, "then"));
        const json_t *prio = json_object_get(body, "priority");
        int64_t priority = prio ? json_integer_value(prio) : PRIORITY_DEFAULT, now = relay_now_ms(), version = 1;
        char id[40];
        int rc;
        if (existing) {
                snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(existing, "id")));
                version = json_integer_value(json_object_get(existing, "version")) + 1;
                if (!prio)
                        priority = json_integer_value(json_object_get(existing, "priority"));
                rc = relay_db_exec(db, NULL,
                                   "UPDATE policies_policies SET version = ?, priority = ?, when_src = ?, then_src = ?,"
                                   " doc = ?, updated_ms = ?, deleted_ms = NULL WHERE tenant = ? AND id = ?",
                                   "iissjiss", version, priority, when, then, body, now, tenant, id);
                *status = 200;
        } else {
                relay_id_new("pol_", id, sizeof(id));
                rc = relay_db_exec(db, NULL,
                                   "INSERT INTO policies_policies (tenant, id, name, version, priority, when_src,"
                                   " then_src, doc, created_ms, updated_ms) VALUES (?, ?, ?, 1, ?, ?, ?, ?, ?, ?)",
                                   "sssissjii", tenant, id, name, priority, when, then, body, now, now);
                *status = 201;
        }
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(
                        db, NULL,
                        "INSERT INTO policies_versions (tenant, policy_id, version, doc, created_ms, created_by)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        "ssijis", tenant, id, version, body, now, relay_principal_of(req)->subject);
        if (rc == RELAY_DB_OK)
                rc = relay_event_emit(
                        db, tenant, existing ? "policy.updated" : "policy.created",
                        json_pack("{s:s,s:s,s:I}", "id", id, "name", name, "version", (json_int_t)version), NULL);
        return rc;
}

static bool unchanged(const json_t *existing, const json_t *body)
{
        const json_t *prio = json_object_get(body, "priority");
        return json_is_null(json_object_get(existing, "deleted_at")) &&
               json_equal(json_object_get(existing, "when"), json_object_get(body, "when")) &&
               json_equal(json_object_get(existing, "then"), json_object_get(body, "then")) &&
               (!prio || json_equal(json_object_get(existing, "priority"), prio));
}

static int post_policy(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body || !valid_body(req, body))
                return RELAY_OK;
        relay_db *db = relay_db_of(req);
        const char *tenant = relay_principal_of(req)->tenant;
        json_t *existing = NULL, *result = NULL;
        int status = 200;
        int64_t live = 0;
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_event_order_lock(db);
        if (rc == RELAY_DB_OK)
                rc = load(db, tenant, NULL, json_string_value(json_object_get(body, "name")), &existing);
        if (rc == RELAY_DB_OK && (!existing || !json_is_null(json_object_get(existing, "deleted_at"))))
                rc = live_count(db, tenant, &live);
        if (rc == RELAY_DB_OK && live >= relay_conf_int(policies_self, "max_per_tenant")) {
                relay_db_rollback(db);
                json_decref(existing);
                return relay_error(req, 422, "policy.limit", "a tenant may have at most %lld policies",
                                   (long long)relay_conf_int(policies_self, "max_per_tenant"));
        }
        bool same = existing && unchanged(existing, body);
        if (rc == RELAY_DB_OK && !same)
                rc = publish(req, db, body, existing, &status);
        if (rc == RELAY_DB_OK)
                rc = load(db, tenant, NULL, json_string_value(json_object_get(body, "name")), &result);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        json_decref(existing);
        if (rc != RELAY_DB_OK) {
                json_decref(result);
                return relay_db_reply_error(req, rc);
        }
        return relay_reply_json(req, status, result);
}

static int get_policy(relay_req *req)
{
        json_t *policy;
        int rc = load(relay_db_of(req), relay_principal_of(req)->tenant, relay_param(req, "id"), NULL, &policy);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (!policy)
                return relay_error(req, 404, "policy.not_found", "no such policy");
        return relay_reply_json(req, 200, policy);
}

static int delete_policy(relay_req *req)
{
        relay_db *db = relay_db_of(req);
        const char *tenant = relay_principal_of(req)->tenant, *id = relay_param(req, "id");
        json_t *policy = NULL;
        int64_t changes = 0;
        if (!id_valid(id))
                return relay_error(req, 404, "policy.not_found", "no such policy");
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, &changes,
                                   "UPDATE policies_policies SET deleted_ms = ? WHERE tenant = ? AND id = ?"
                                   " AND deleted_ms IS NULL",
                                   "iss", relay_now_ms(), tenant, id);
        if (rc == RELAY_DB_OK && changes)
                rc = relay_event_emit(db, tenant, "policy.deleted", json_pack("{s:s}", "id", id), NULL);
        if (rc == RELAY_DB_OK)
                rc = load(db, tenant, id, NULL, &policy);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK) {
                json_decref(policy);
                return relay_db_reply_error(req, rc);
        }
        if (!policy)
                return relay_error(req, 404, "policy.not_found", "no such policy");
        return relay_reply_json(req, 200, policy);
}

static int dryrun(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        json_t *record = json_object_get(body, "record");
        if (!json_is_object(record))
                return relay_error(req, 422, "validation_failed", "record must be a JSON object");
        json_t *policy;
        int rc = load(relay_db_of(req), relay_principal_of(req)->tenant, relay_param(req, "id"), NULL, &policy);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (!policy)
                return relay_error(req, 404, "policy.not_found", "no such policy");
        /* the size the server would compute, when the sample leaves it out */
        json_t *payload = json_object_get(record, "payload");
        if (!json_object_get(record, "size") && json_is_object(payload)) {
                char *text = json_dumps(payload, JSON_COMPACT);
                json_object_set_new(record, "size", json_integer(text ? (json_int_t)strlen(text) : 0));
                free(text);
        }
        pexpr_error err;
        paction act = {0};
        pexpr *when = pexpr_parse(json_string_value(json_object_get(policy, "when")), &err);
        bool matched = when && pexpr_eval(when, record) &&
                       pparse_then(json_string_value(json_object_get(policy, "then")), &act, &err) == 0;
        pexpr_free(when);
        return relay_reply_json(req, 200,
                                json_pack("{s:o,s:b,s:{s:s?,s:I,s:b}}", "policy", policy, "matched", matched, "action",
                                          "queue", matched && act.queue[0] ? act.queue : NULL, "defer_ms",
                                          (json_int_t)(matched ? act.defer_ms : 0), "drop", matched && act.drop));
}

int policies_routes_register(relay_plugin *p)
{
        if (relay_route(p, "GET", "/v1/policies", get_policies, RELAY_AUTH_TENANT) ||
            relay_route_role(p, "POST", "/v1/policies", post_policy, "admin operator") ||
            relay_route(p, "GET", "/v1/policies/:id", get_policy, RELAY_AUTH_TENANT) ||
            relay_route_role(p, "DELETE", "/v1/policies/:id", delete_policy, "admin operator") ||
            relay_route(p, "POST", "/v1/policies/:id/dryrun", dryrun, RELAY_AUTH_TENANT))
                return RELAY_ERR;
        return RELAY_OK;
}
