/* outbound.c - a record's way to "synced".
 *
 * Each created or updated record version whose status is "queued" gets a
 * record.sync job in the
 * durable queue, routed by sync policies: queue=<name> names its queue,
 * defer=<duration> delays it, drop means no job (the record stays as it
 * is).  The job finishes the version: once no other outbound job for the
 * record is pending (webhook deliveries, say), it marks the record synced
 * through the records service, which emits record.synced.  A job whose
 * version was edited since has nothing to do: the newer version's job
 * will finish it.  Jobs are enqueued from the outbox on the control
 * thread, so they exist exactly for committed changes. */
#include <stdio.h>
#include <string.h>
#include "sync.h"

#define WAIT_FOR_OTHERS_MS 1000
#define WAIT_FOR_SUBSCRIBERS_MS 100
/* Also the batch: a claim's jobs share one transaction (relay_job_batch),
 * which the storage layer splits before PostgreSQL's subtransaction limit. */
#define JOB_CONCURRENCY 16

static int on_record(relay_plugin *p, const relay_event *ev, void *data)
{
        (void)data;
        const json_t *rec = ev->payload;
        const char *status = json_string_value(json_object_get(rec, "status"));
        const char *id = json_string_value(json_object_get(rec, "id"));
        const char *causal = json_string_value(json_object_get(rec, "causal"));
        /* only a version waiting to go out: a draft is not ready, a failed
         * one waits for its client, a synced one is done */
        if (!ev->tenant || !id || !causal || !status || strcmp(status, "queued") != 0 ||
            json_is_true(json_object_get(rec, "deleted")))
                return RELAY_OK;
        relay_db *db = relay_plugin_db(p);
        policies_set *set = NULL;
        int rc = sync_policies->load(db, ev->tenant, &set);
        if (rc != RELAY_DB_OK)
                return RELAY_ERR; /* delivered again later */
        paction act;
        char policy[64];
        bool matched = sync_policies->decide(set, rec, &act, policy, sizeof(policy));
        sync_policies->free(set);
        if (matched && act.drop)
                return RELAY_OK;
        json_t *payload = json_pack("{s:s,s:s,s:s?,s:I}", "id", id, "causal", causal, "policy", matched ? policy : NULL,
                                    "seq", (json_int_t)ev->seq);
        relay_job_spec spec = {.size = sizeof(spec),
                               .tenant = ev->tenant,
                               .kind = SYNC_JOB_KIND,
                               .queue = matched && act.queue[0] ? act.queue : "default",
                               .target = id,
                               .payload = payload,
                               .run_at_ms = matched && act.defer_ms ? relay_now_ms() + act.defer_ms : 0};
        rc = relay_job_enqueue(db, &spec, NULL);
        json_decref(payload);
        return rc == RELAY_DB_OK ? RELAY_OK : RELAY_ERR;
}

static void run_sync(relay_plugin *p, relay_job *job, void *data)
{
        (void)data;
        relay_db *db = relay_plugin_db(p);
        const char *tenant = relay_job_tenant(job), *id = relay_job_target(job);
        const char *causal = json_string_value(json_object_get(relay_job_payload(job), "causal"));
        int64_t others = 0;
        if (!tenant || !id || !causal) {
                relay_job_done(job, 0, "malformed record.sync job", 0);
                return;
        }
        /* Other subscribers (webhooks) enqueue their jobs for the same event
         * on their own schedule: until they all have seen it, "no other
         * job pending" proves nothing. */
        json_t *seq = json_object_get(relay_job_payload(job), "seq");
        if (json_is_integer(seq) && !relay_event_settled(json_integer_value(seq))) {
                relay_job_defer(job, WAIT_FOR_SUBSCRIBERS_MS, "waiting for event subscribers to see the change");
                return;
        }
        if (relay_job_pending(db, tenant, id, SYNC_JOB_KIND, &others) != RELAY_DB_OK) {
                relay_job_done(job, 0, relay_db_errmsg(db), 0);
                return;
        }
        if (others > 0) {
                char why[80];
                snprintf(why, sizeof(why), "waiting for %lld outbound job(s) of the record", (long long)others);
                relay_job_defer(job, WAIT_FOR_OTHERS_MS, why);
                return;
        }
        bool changed = false;
        int rc = sync_records->mark_synced(db, tenant, id, causal, &changed);
        relay_job_done(job, rc == RELAY_DB_OK, rc == RELAY_DB_OK ? NULL : relay_db_errmsg(db), 0);
}

int sync_outbound_register(relay_plugin *p)
{
        if (relay_event_subscribe(p, "sync.created", "record.created", on_record, NULL) ||
            relay_event_subscribe(p, "sync.updated", "record.updated", on_record, NULL) ||
            relay_job_handler(p, SYNC_JOB_KIND, JOB_CONCURRENCY, run_sync, NULL) ||
            /* a job is a few statements: one commit for a claim's worth, not two per record */
            relay_job_batch(p, SYNC_JOB_KIND))
                return RELAY_ERR;
        return RELAY_OK;
}
