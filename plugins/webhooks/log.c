/* log.c - the delivery log and resend (admins write, admins and operators
 * read):
 *   GET  /v1/webhooks/:id/deliveries?limit=&cursor=&message=
 *        the endpoint's attempts, newest first
 *   POST /v1/webhooks/:id/resend {"message_id":"evt_..."}
 *        -> 202 {"job":{...}}: a new delivery of a past message, with the
 *        same webhook-id, through the queue like any other */
#include <stdio.h>
#include <string.h>
#include "webhooks.h"

#define ATTEMPT_COLUMNS                                                                                       \
        "id, endpoint_id, job_id, message_id, event_type, attempt, status_code, outcome, error, latency_ms, " \
        "response_excerpt, created_ms"

static json_t *attempt_json(relay_db_result *r)
{
        char when[40];
        return json_pack(
                "{s:s,s:s,s:s,s:s,s:s,s:I,s:o,s:s,s:s?,s:I,s:s?,s:s}", "id", relay_db_text(r, 0), "endpoint_id",
                relay_db_text(r, 1), "job_id", relay_db_text(r, 2), "message_id", relay_db_text(r, 3), "event_type",
                relay_db_text(r, 4), "attempt", (json_int_t)relay_db_int(r, 5), "status_code",
                relay_db_is_null(r, 6) ? json_null() : json_integer(relay_db_int(r, 6)), "outcome", relay_db_text(r, 7),
                "error", relay_db_text(r, 8), "latency_ms", (json_int_t)relay_db_int(r, 9), "response_excerpt",
                relay_db_text(r, 10), "created_at", relay_time_format(relay_db_int(r, 11), when, sizeof(when)));
}

/* Does the caller's tenant have endpoint ID?  *ENABLED (may be NULL) tells
 * whether it is.  Answers the request and returns false when it cannot say yes. */
static bool endpoint_exists(relay_req *req, const char *id, bool *enabled)
{
        if (!wh_endpoint_id_valid(id)) {
                relay_error(req, 404, "webhook.not_found", "no such webhook endpoint");
                return false;
        }
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT enabled FROM webhooks_endpoints WHERE tenant = ? AND id = ?", "ss",
                                relay_principal_of(req)->tenant, id);
        if (rc != RELAY_DB_OK) {
                relay_db_reply_error(req, rc);
                return false;
        }
        bool found = relay_db_next(r);
        if (found && enabled)
                *enabled = relay_db_int(r, 0) != 0;
        relay_db_free(r);
        if (!found)
                relay_error(req, 404, "webhook.not_found", "no such webhook endpoint");
        return found;
}

static int get_deliveries(relay_req *req)
{
        const char *id = relay_param(req, "id"), *message = relay_query(req, "message");
        bool bad = false;
        long limit = relay_query_limit(req, "limit", 50, 200, &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to 200");
        if (message && !relay_id_valid("evt_", message))
                return relay_error(req, 400, "invalid_message", "message must be an event id (evt_...)");
        json_t *cursor;
        if (relay_query_cursor(req, "cursor", &cursor) != RELAY_OK)
                return RELAY_OK;
        const char *after = json_string_value(json_object_get(cursor, "id"));
        if (cursor && !relay_id_valid("wha_", after))
                return relay_error(req, 400, "invalid_cursor", "cursor is not one this server gave");
        if (!endpoint_exists(req, id, NULL))
                return RELAY_OK;
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT " ATTEMPT_COLUMNS " FROM webhooks_attempts WHERE tenant = ? AND endpoint_id = ?"
                                " AND (CAST(? AS TEXT) IS NULL OR message_id = ?)"
                                " AND (CAST(? AS TEXT) IS NULL OR id < ?) ORDER BY id DESC LIMIT ?",
                                "ssssssi", relay_principal_of(req)->tenant, id, message, message, after, after,
                                (int64_t)limit + 1);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        return relay_reply_page(req, r, "deliveries", limit, attempt_json);
}

static int post_resend(relay_req *req)
{
        const char *id = relay_param(req, "id"), *tenant = relay_principal_of(req)->tenant;
        bool enabled = false;
        if (!endpoint_exists(req, id, &enabled))
                return RELAY_OK;
        json_t *body = relay_json_body(req);
        if (!body)
                return RELAY_OK;
        json_t *errors = NULL;
        const char *key;
        json_t *v;
        json_object_foreach(body, key, v)
        {
                if (strcmp(key, "message_id") != 0)
                        relay_validation_add(&errors, "body", key, "unknown field", "extra_forbidden");
        }
        const char *message = json_string_value(json_object_get(body, "message_id"));
        if (!message)
                relay_validation_add(&errors, "body", "message_id", "message_id (an event id) is required", "missing");
        if (errors)
                return relay_error_validation(req, errors);
        if (!enabled)
                return relay_error(req, 409, "webhook.disabled", "the endpoint is disabled; enable it first");
        relay_db *db = relay_db_of(req);
        relay_db_result *r = NULL;
        bool found = false;
        char order_key[256] = "";
        int64_t seq = 0;
        int rc = RELAY_DB_OK;
        if (relay_id_valid("evt_", message)) {
                rc = relay_db_query(db, &r, "SELECT order_key, seq FROM webhooks_messages WHERE tenant = ? AND id = ?",
                                    "ss", tenant, message);
                if (rc == RELAY_DB_OK && relay_db_next(r)) {
                        found = true;
                        snprintf(order_key, sizeof(order_key), "%s", relay_db_text(r, 0));
                        seq = relay_db_int(r, 1);
                }
                relay_db_free(r);
        }
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (!found)
                return relay_error(req, 404, "webhook.message_not_found",
                                   "no message with that id was sent to this organization's webhooks");
        /* the job and its order row commit together; the resend keeps the
         * message's place in its record's order */
        char job_id[40];
        rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = wh_enqueue(db, tenant, id, message, *order_key ? order_key : id, seq, job_id);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        rc = relay_job_get(db, &r, tenant, job_id);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        json_t *job = relay_db_next(r) ? relay_job_json(r) : json_null();
        relay_db_free(r);
        return relay_reply_json(req, 202, json_pack("{s:o}", "job", job));
}

int wh_log_register(relay_plugin *p)
{
        if (relay_route_role(p, "GET", "/v1/webhooks/:id/deliveries", get_deliveries, "admin operator") ||
            relay_route_role(p, "POST", "/v1/webhooks/:id/resend", post_resend, "admin"))
                return RELAY_ERR;
        return RELAY_OK;
}
