/* queue.c - RelaySync's org-wide outbound queue: the tenant's jobs in the
 * durable job queue (record syncs, webhook deliveries...).
 *   GET  /v1/sync/queue?state=&limit=&cursor=   newest first
 *   POST /v1/sync/retry/:job                     due now (a dead job gets one more attempt) */
#include <string.h>
#include "sync.h"

static int get_queue(relay_req *req)
{
        const char *state = relay_query(req, "state");
        long max = (long)relay_conf_int(sync_self, "max_page_size");
        bool bad = false;
        long limit = relay_query_limit(req, "limit", max < 50 ? max : 50, max, &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to %ld", max);
        if (state && strcmp(state, "queued") && strcmp(state, "running") && strcmp(state, "done") &&
            strcmp(state, "dead"))
                return relay_error(req, 400, "invalid_state", "state must be queued, running, done or dead");
        json_t *cursor;
        if (relay_query_cursor(req, "cursor", &cursor) != RELAY_OK)
                return RELAY_OK;
        const char *after = json_string_value(json_object_get(cursor, "id"));
        if (cursor && !relay_id_valid("job_", after))
                return relay_error(req, 400, "invalid_cursor", "cursor is not one this server gave");
        relay_db_result *r;
        int rc = relay_job_list(relay_db_of(req), &r, relay_principal_of(req)->tenant, state, after, (int)limit + 1);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        return relay_reply_page(req, r, "jobs", limit, relay_job_json);
}

static int load_job(relay_db *db, const char *tenant, const char *id, json_t **job)
{
        relay_db_result *r;
        *job = NULL;
        int rc = relay_job_get(db, &r, tenant, id);
        if (rc == RELAY_DB_OK && relay_db_next(r))
                *job = relay_job_json(r);
        relay_db_free(r);
        return rc;
}

static int post_retry(relay_req *req)
{
        const char *id = relay_param(req, "job"), *tenant = relay_principal_of(req)->tenant;
        relay_db *db = relay_db_of(req);
        json_t *job = NULL;
        if (!relay_id_valid("job_", id))
                return relay_error(req, 404, "job.not_found", "no such job");
        int rc = load_job(db, tenant, id, &job);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (!job)
                return relay_error(req, 404, "job.not_found", "no such job");
        const char *state = json_string_value(json_object_get(job, "state"));
        if (strcmp(state, "queued") != 0 && strcmp(state, "dead") != 0) {
                json_t *extra = json_pack("{s:o}", "job", job);
                return relay_error_json(req, 409, "job.not_retryable",
                                        "only a queued or dead job can be retried; this one is running or done", extra);
        }
        json_decref(job);
        rc = relay_job_retry_now(db, tenant, id);
        if (rc == RELAY_ERR)
                return relay_error(req, 409, "job.not_retryable", "the job started or finished meanwhile");
        if (rc == RELAY_DB_OK)
                rc = load_job(db, tenant, id, &job);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        return relay_reply_json(req, 202, json_pack("{s:o}", "job", job ? job : json_null()));
}

int sync_queue_register(relay_plugin *p)
{
        if (relay_route(p, "GET", "/v1/sync/queue", get_queue, RELAY_AUTH_TENANT) ||
            relay_route_role(p, "POST", "/v1/sync/retry/:job", post_retry, "admin operator"))
                return RELAY_ERR;
        return RELAY_OK;
}
