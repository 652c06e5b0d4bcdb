/* write.c - the write routes; each is one change through records_apply():
 *   POST   /v1/records        create (Idempotency-Key honoured)
 *   PATCH  /v1/records/:id    partial update; "causal" required
 *   DELETE /v1/records/:id    soft delete (tombstone); "causal" optional */
#include <string.h>
#include "records.h"

/* Runs C in its own transaction and answers with its outcome. */
static int respond(relay_req *req, records_change *c)
{
        relay_db *db = relay_db_of(req);
        records_result res = {0};
        const char *tenant = relay_principal_of(req)->tenant;
        c->actor = relay_principal_of(req)->subject;
        c->idem_key = relay_header(req, "Idempotency-Key");
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = records_apply(db, tenant, c, &res);
        if (rc == RELAY_DB_OK)
                rc = relay_db_commit(db);
        else if (relay_db_in_transaction(db))
                relay_db_rollback(db);
        if (rc != RELAY_DB_OK) {
                records_result_clear(&res);
                return relay_db_reply_error(req, rc);
        }
        json_t *body = json_incref(res.body);
        int status = res.status;
        records_outcome outcome = res.outcome;
        records_result_clear(&res); /* after commit: the key leaves "in flight" */
        if (outcome == RECORDS_REPLAYED)
                relay_set_header(req, "Idempotent-Replayed", "true");
        if (outcome == RECORDS_APPLIED || outcome == RECORDS_REPLAYED)
                return relay_reply_json(req, status, body);
        if (status == 409 && json_object_get(body, "code") &&
            strcmp(json_string_value(json_object_get(body, "code")), "idempotency_key_in_flight") == 0)
                relay_set_header(req, "Retry-After", "1");
        char code[64], message[256];
        snprintf(code, sizeof(code), "%s", json_string_value(json_object_get(body, "code")));
        snprintf(message, sizeof(message), "%s", json_string_value(json_object_get(body, "message")));
        json_object_del(body, "code");
        json_object_del(body, "message");
        return relay_error_json(req, status, code, message, body);
}

static int post_record(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        records_change c = {.op = RECORDS_CREATE, .fields = body};
        return respond(req, &c);
}

static int patch_record(relay_req *req)
{
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        const json_t *causal = json_object_get(body, "causal");
        if (causal && !json_is_string(causal))
                return relay_error(req, 422, "validation_failed", "causal must be a string");
        records_change c = {.op = RECORDS_UPDATE,
                            .id = relay_param(req, "id"),
                            .causal = json_string_value(causal),
                            .fields = body};
        return respond(req, &c);
}

/* The causal token of a DELETE: ?causal=, If-Match, or a JSON body. */
static int delete_record(relay_req *req)
{
        const char *causal = relay_query(req, "causal");
        if (!causal)
                causal = relay_header(req, "If-Match");
        size_t len = 0;
        relay_body(req, &len);
        if (!causal && len) {
                json_t *body = relay_json_body(req);
                if (!body)
                        return RELAY_OK;
                const json_t *v = json_object_get(body, "causal");
                if (v && !json_is_string(v))
                        return relay_error(req, 422, "validation_failed", "causal must be a string");
                causal = json_string_value(v);
        }
        records_change c = {.op = RECORDS_DELETE, .id = relay_param(req, "id"), .causal = causal};
        return respond(req, &c);
}

/* Viewers read; admins and operators write. */
static int writer_route(relay_plugin *p, const char *method, const char *pattern, relay_handler fn)
{
        relay_route_opts o = {.size = sizeof(o),
                              .method = method,
                              .pattern = pattern,
                              .handler = fn,
                              .auth = RELAY_AUTH_TENANT,
                              .role = "admin operator"};
        return relay_route_ex(p, &o);
}

int records_write_register(relay_plugin *p)
{
        if (writer_route(p, "POST", "/v1/records", post_record) ||
            writer_route(p, "PATCH", "/v1/records/:id", patch_record) ||
            writer_route(p, "DELETE", "/v1/records/:id", delete_record))
                return RELAY_ERR;
        return RELAY_OK;
}
