/* write.c - the write routes; each is one change through records_apply():
 *   POST   /v1/records        create (Idempotency-Key honoured)
 *   PATCH  /v1/records/:id    partial update; "causal" required
 *   DELETE /v1/records/:id    soft delete (tombstone); "causal" optional */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "records.h"

/* One write in flight: the change and, after the commit, its outcome. */
typedef struct pending {
        records_change c;
        records_result res;
} pending;

/* Inside the worker's shared transaction (relay_db_group): the change. */
static int apply(relay_req *req, relay_db *db, void *data)
{
        pending *w = data;
        return records_apply(db, relay_principal_of(req)->tenant, &w->c, &w->res);
}

/* After the commit: the answer, then the key leaves "in flight". */
static int answer(relay_req *req, int status, void *data)
{
        pending *w = data;
        records_result res = w->res;
        free(w);
        if (status != RELAY_DB_OK) {
                records_result_clear(&res);
                return relay_db_reply_error(req, status);
        }
        json_t *body = json_incref(res.body);
        int code_status = res.status;
        records_outcome outcome = res.outcome;
        records_result_clear(&res);
        if (outcome == RECORDS_REPLAYED)
                relay_set_header(req, "Idempotent-Replayed", "true");
        if (outcome == RECORDS_APPLIED || outcome == RECORDS_REPLAYED)
                return relay_reply_json(req, code_status, body);
        const char *code = json_string_value(json_object_get(body, "code"));
        if (code_status == 409 && code && strcmp(code, "idempotency_key_in_flight") == 0)
                relay_set_header(req, "Retry-After", "1");
        return relay_error_object(req, code_status, body);
}

/* Queues C for this turn's group commit.  C's strings belong to the
 * request, which lives until the answer. */
static int respond(relay_req *req, const records_change *c)
{
        pending *w = calloc(1, sizeof(*w));
        if (!w)
                return relay_error(req, 503, "busy", "out of memory; retry");
        w->c = *c;
        w->c.actor = relay_principal_of(req)->subject;
        w->c.idem_key = relay_header(req, "Idempotency-Key");
        if (relay_db_group(req, apply, answer, w) != RELAY_OK) {
                free(w);
                return relay_error(req, 503, "unavailable", "storage is unavailable; retry shortly");
        }
        return RELAY_ASYNC;
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

int records_write_register(relay_plugin *p)
{
        /* viewers read; admins and operators write */
        if (relay_route_role(p, "POST", "/v1/records", post_record, "admin operator") ||
            relay_route_role(p, "PATCH", "/v1/records/:id", patch_record, "admin operator") ||
            relay_route_role(p, "DELETE", "/v1/records/:id", delete_record, "admin operator"))
                return RELAY_ERR;
        return RELAY_OK;
}
