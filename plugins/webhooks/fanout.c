/* fanout.c - events to delivery jobs.
 *
 * One subscription ("deliveries", every type) on the control thread,
 * inside the outbox's transaction: for an event of a tenant, each enabled
 * endpoint of the tenant with a matching pattern gets one job (kind
 * webhook.deliver, queue "webhooks"), and the message body is stored once
 * ({"type","timestamp","data"}), so every attempt and endpoint sends the
 * same bytes.  Jobs, message and the subscriber's position commit
 * together: an event is fanned out exactly once, also across a crash.
 *
 * The job's target is the record id when the event's payload has an "id"
 * (so the record's sync job waits for its webhooks, and GET /v1/sync/queue
 * shows which record a delivery is about), else the endpoint id.  It is
 * also the order key: a job waits while an earlier event with the same
 * key is pending for the same endpoint (deliver.c). */
#include <stdlib.h>
#include <string.h>
#include "webhooks.h"

int wh_enqueue(relay_db *db, const char *tenant, const char *endpoint_id, const char *message_id, const char *order_key,
               int64_t seq, char *id_out)
{
        char job_id[40];
        int max = (int)relay_conf_int(wh_self, "max_attempts");
        if (max < 1)
                max = 1;
        json_t *payload = json_pack("{s:s,s:s,s:I,s:i}", "endpoint", endpoint_id, "message", message_id, "seq",
                                    (json_int_t)seq, "max_attempts", max);
        relay_job_spec spec = {.size = sizeof(spec),
                               .tenant = tenant,
                               .kind = WH_JOB_KIND,
                               .queue = WH_QUEUE,
                               .target = order_key,
                               .payload = payload,
                               .max_attempts = max};
        int rc = relay_job_enqueue(db, &spec, job_id);
        json_decref(payload);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(
                        db, NULL,
                        "INSERT INTO webhooks_pending (job_id, endpoint_id, order_key, seq) VALUES (?, ?, ?, ?)",
                        "sssi", job_id, endpoint_id, order_key, seq);
        if (rc == RELAY_DB_OK && id_out)
                memcpy(id_out, job_id, strlen(job_id) + 1);
        return rc;
}

/* Does any pattern of the JSON array EVENTS match TYPE? */
static bool matches(const char *events, const char *type)
{
        json_t *list = json_loads(events ? events : "[]", 0, NULL);
        bool hit = false;
        size_t i;
        json_t *v;
        json_array_foreach(list, i, v)
        {
                if (relay_event_matches(json_string_value(v), type)) {
                        hit = true;
                        break;
                }
        }
        json_decref(list);
        return hit;
}

/* Stores the event's message.  *FRESH is false when it was there already:
 * the message and its jobs commit together (one savepoint per event), so
 * another daemon of a shared database (or an earlier delivery of the
 * event) has queued the jobs. */
static int store_message(relay_db *db, const relay_event *ev, const char *order_key, bool *fresh)
{
        char when[40];
        json_t *doc = json_pack("{s:s,s:s,s:O}", "type", ev->type, "timestamp",
                                relay_time_format(ev->created_ms, when, sizeof(when)), "data",
                                ev->payload ? ev->payload : json_null());
        char *body = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(doc);
        if (!body)
                return RELAY_DB_ERROR;
        int64_t added = 0;
        int rc = relay_db_exec(db, &added,
                               "INSERT INTO webhooks_messages (tenant, id, type, body, order_key, seq, created_ms)"
                               " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, id) DO NOTHING",
                               "sssssii", ev->tenant, ev->id, ev->type, body, order_key, ev->seq, ev->created_ms);
        free(body);
        *fresh = added > 0;
        return rc;
}

static int on_event(relay_plugin *p, const relay_event *ev, void *data)
{
        (void)data;
        if (!ev->tenant)
                return RELAY_OK;
        relay_db *db = relay_plugin_db(p);
        relay_db_result *r;
        int rc = relay_db_query(db, &r, "SELECT id, events FROM webhooks_endpoints WHERE tenant = ? AND enabled = 1",
                                "s", ev->tenant);
        if (rc != RELAY_DB_OK)
                return RELAY_ERR; /* handed over again later */
        const char *record = json_string_value(json_object_get(ev->payload, "id"));
        bool stored = false, fresh = true;
        while (rc == RELAY_DB_OK && fresh && relay_db_next(r)) {
                if (!matches(relay_db_text(r, 1), ev->type))
                        continue;
                const char *endpoint = relay_db_text(r, 0);
                const char *key = record && *record ? record : endpoint;
                if (!stored) {
                        /* the message's own order key: the record, or "" for per-endpoint order */
                        rc = store_message(db, ev, record && *record ? record : "", &fresh);
                        stored = rc == RELAY_DB_OK;
                }
                if (rc == RELAY_DB_OK && fresh)
                        rc = wh_enqueue(db, ev->tenant, endpoint, ev->id, key, ev->seq, NULL);
        }
        relay_db_free(r);
        if (rc != RELAY_DB_OK)
                relay_log(p, RELAY_LOG_WARN, "cannot queue the deliveries of %s: %s (will try again)", ev->id,
                          relay_db_errmsg(db));
        return rc == RELAY_DB_OK ? RELAY_OK : RELAY_ERR;
}

int wh_fanout_register(relay_plugin *p) { return relay_event_subscribe(p, "deliveries", "*", on_event, NULL); }
