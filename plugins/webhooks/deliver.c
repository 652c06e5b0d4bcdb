/* deliver.c - the webhook.deliver job: one POST of one message to one
 * endpoint, on the control thread's event loop (relay_http_fetch).
 *
 *   headers   Content-Type: application/json, webhook-id (the event id: the
 *             same on every attempt and resend), webhook-timestamp (now),
 *             webhook-signature "v1,<base64 HMAC-SHA256>", and during a
 *             rotation's grace a second one with the previous secret.
 *   2xx       delivered; the endpoint's failure count starts over
 *   5xx, 429, network errors, timeouts
 *             retried with the queue's exponential backoff and jitter (a
 *             Retry-After, capped at max_retry_after, replaces it); dead
 *             after max_attempts
 *   other 4xx, 3xx left after max_redirects, a blocked destination (SSRF)
 *             failed for good, no retry
 *   shutdown  the attempt does not count; it runs again after restart
 * Every attempt is logged (log.c), with the job's end, in one transaction
 * with the other answers of the same loop turn.  Each failed one counts against the
 * endpoint; at disable_after in a row it is disabled (event
 * webhook.endpoint.disabled) and its pending deliveries fail.
 *
 * Order: a job waits (relay_job_defer, no attempt counted) while an
 * earlier event with the same order key (the record) is still pending for
 * the same endpoint. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "webhooks.h"

/* The [webhooks] keys a delivery uses, read at start and at each reload
 * (control thread) instead of looked up several times per delivery. */
static struct {
        uint64_t timeout_ms, connect_timeout_ms;
        int64_t max_retry_after, disable_after, max_redirects;
        size_t response_excerpt;
        bool allow_private;
} conf;

void wh_deliver_configure(relay_plugin *p)
{
        conf.timeout_ms = relay_conf_duration_ms(p, "timeout");
        conf.connect_timeout_ms = relay_conf_duration_ms(p, "connect_timeout");
        conf.max_retry_after = (int64_t)relay_conf_duration_ms(p, "max_retry_after");
        conf.disable_after = relay_conf_int(p, "disable_after");
        conf.max_redirects = relay_conf_int(p, "max_redirects");
        conf.response_excerpt = (size_t)relay_conf_size(p, "response_excerpt");
        conf.allow_private = relay_conf_bool(p, "allow_private_targets");
}

#define ORDER_WAIT_MIN_MS 150
#define ORDER_WAIT_MAX_MS 5000
#define STORAGE_WAIT_MS 1000

/* Answers that arrive in one turn of the control loop are recorded
 * together: one transaction (one commit, one fsync on PostgreSQL) for up
 * to this many, each in a savepoint of its own.  A commit per answer held
 * PostgreSQL deliveries to about one per commit latency. */
#define ANSWERS_PER_COMMIT 16

typedef enum { OUT_DELIVERED, OUT_RETRY, OUT_FAIL } verdict;

typedef struct attempt {
        struct attempt *next; /* in the list of answers to record */
        relay_job *job;
        char tenant[80], endpoint[WH_ID_LEN], message[WH_ID_LEN], type[160];
        int number, max_attempts;
        /* the answer, once it came */
        verdict v;
        char why[512];
        int64_t retry_after, latency_ms;
        int status;
        char *excerpt; /* of the response body */
} attempt;

static attempt *answered, **answered_tail = &answered;
static relay_timer *record_soon;

/* -------------------------------------------------------------- helpers */

static void forget_pending(relay_db *db, relay_job *job)
{
        relay_db_exec(db, NULL, "DELETE FROM webhooks_pending WHERE job_id = ?", "s", relay_job_id(job));
}

/* Fails JOB for good (no delivery can happen) and drops its order row. */
static void give_up(relay_db *db, relay_job *job, const char *why)
{
        forget_pending(db, job);
        relay_job_fail(job, why);
}

/* 0 when nothing earlier is pending for ENDPOINT and KEY, else how long
 * to wait: until the earliest blocker is due, within bounds. */
/* How long JOB must wait for the earliest pending delivery of the same
 * endpoint and record: 0 when there is none, else until it is due (within
 * bounds).  A pending row whose job has ended elsewhere (a lease that ran
 * out into the dead letters, a purge) waits for nothing: it is dropped and
 * the next one looked at.  A read first: nearly always nothing is pending,
 * and that should not cost a write (a commit, on PostgreSQL). */
static int64_t order_wait(relay_db *db, relay_job *job, const char *endpoint, int64_t seq, int *rc)
{
        const char *key = relay_job_target(job);
        for (int round = 0; round < 16; round++) {
                relay_db_result *r, *j = NULL;
                *rc = relay_db_query(db, &r,
                                     "SELECT job_id FROM webhooks_pending WHERE endpoint_id = ? AND order_key = ?"
                                     " AND seq < ? ORDER BY seq LIMIT 1",
                                     "ssi", endpoint, key ? key : "", seq);
                if (*rc != RELAY_DB_OK || !relay_db_next(r)) {
                        relay_db_free(r);
                        return 0;
                }
                char blocker[WH_ID_LEN];
                snprintf(blocker, sizeof(blocker), "%s", relay_db_text(r, 0));
                relay_db_free(r);
                *rc = relay_job_get(db, &j, relay_job_tenant(job), blocker);
                const char *state = *rc == RELAY_DB_OK && relay_db_next(j) ? relay_db_text(j, 4) : NULL;
                bool queued = state && strcmp(state, "queued") == 0;
                int64_t wait = ORDER_WAIT_MIN_MS;
                if (queued) { /* until the blocker's next attempt is due */
                        int64_t due = relay_db_int(j, 7) - relay_now_ms() + 100;
                        wait = due < ORDER_WAIT_MIN_MS   ? ORDER_WAIT_MIN_MS
                               : due > ORDER_WAIT_MAX_MS ? ORDER_WAIT_MAX_MS
                                                         : due;
                }
                bool live = queued || (state && strcmp(state, "running") == 0);
                relay_db_free(j);
                if (*rc != RELAY_DB_OK)
                        return 0;
                if (live)
                        return wait;
                *rc = relay_db_exec(db, NULL, "DELETE FROM webhooks_pending WHERE job_id = ?", "s", blocker);
                if (*rc != RELAY_DB_OK)
                        return 0;
        }
        return ORDER_WAIT_MIN_MS;
}

/* At most MAX bytes of S as valid UTF-8 without NULs: what a log row and
 * JSON can hold.  The caller frees it. */
static char *excerpt(const char *s, size_t len, size_t max)
{
        if (len > max)
                len = max;
        char *out = malloc(len * 3 + 1), *o = out;
        if (!out)
                return NULL;
        size_t i = 0;
        while (i < len) {
                unsigned char c = (unsigned char)s[i];
                size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
                bool ok = n > 0 && i + n <= len && c != 0;
                for (size_t k = 1; ok && k < n; k++)
                        ok = ((unsigned char)s[i + k] & 0xc0) == 0x80;
                if (ok && n > 1) { /* no overlong forms, surrogates or code points past U+10FFFF */
                        unsigned char d = (unsigned char)s[i + 1];
                        ok = !(c == 0xc0 || c == 0xc1 || (c == 0xe0 && d < 0xa0) || (c == 0xed && d >= 0xa0) ||
                               (c == 0xf0 && d < 0x90) || (c == 0xf4 && d >= 0x90) || c > 0xf4);
                }
                if (!ok) {
                        if (i + n > len && n > 1 && c != 0 && len == max)
                                break;                /* a character cut by the limit */
                        memcpy(o, "\xef\xbf\xbd", 3); /* U+FFFD */
                        o += 3;
                        i++;
                        continue;
                }
                memcpy(o, s + i, n);
                o += n;
                i += n;
        }
        *o = '\0';
        return out;
}

/* ---------------------------------------------------------------- outcome */

static verdict judge(const relay_http_response *res, char *why, size_t why_len, int64_t *retry_after)
{
        *retry_after = 0;
        if (res->error == RELAY_HTTP_OK) {
                if (res->status >= 200 && res->status < 300) {
                        why[0] = '\0';
                        return OUT_DELIVERED;
                }
                snprintf(why, why_len, "the endpoint answered HTTP %d", res->status);
                if (res->status >= 500 || res->status == 429) {
                        int64_t cap = conf.max_retry_after;
                        if (res->retry_after_ms > 0)
                                *retry_after = res->retry_after_ms < cap ? res->retry_after_ms : cap;
                        return OUT_RETRY;
                }
                return OUT_FAIL; /* other 4xx, a 3xx not followed: the receiver said no */
        }
        snprintf(why, why_len, "%s", res->error_text ? res->error_text : "the request failed");
        if (res->error == RELAY_HTTP_BLOCKED)
                return OUT_FAIL;
        if (res->error == RELAY_HTTP_REDIRECTS) /* the redirects ran out: a 3xx is the answer */
                return OUT_FAIL;
        return OUT_RETRY; /* timeout, connection, TLS, protocol: may pass next time */
}

/* Counts the attempt against the endpoint.  True when this failure
 * disabled it (and the event is emitted). */
static bool count_failure(relay_db *db, const attempt *a, const char *why, int *rc)
{
        relay_db_result *r;
        int64_t now = relay_now_ms();
        *rc = relay_db_query(db, &r,
                             "UPDATE webhooks_endpoints SET consecutive_failures = consecutive_failures + 1"
                             " WHERE tenant = ? AND id = ? RETURNING consecutive_failures, enabled, url",
                             "ss", a->tenant, a->endpoint);
        if (*rc != RELAY_DB_OK || !relay_db_next(r)) {
                relay_db_free(r);
                return false;
        }
        int64_t failures = relay_db_int(r, 0), limit = conf.disable_after;
        bool enabled = relay_db_int(r, 1) != 0;
        char *url = strdup(relay_db_text(r, 2));
        relay_db_free(r);
        bool disabled = false;
        if (enabled && limit > 0 && failures >= limit && url) {
                char reason[400];
                snprintf(reason, sizeof(reason), "%lld consecutive failed deliveries; last: %.300s",
                         (long long)failures, why);
                int64_t changes = 0;
                *rc = relay_db_exec(db, &changes,
                                    "UPDATE webhooks_endpoints SET enabled = 0, disabled_reason = ?, updated_ms = ?"
                                    " WHERE tenant = ? AND id = ? AND enabled = 1",
                                    "siss", reason, now, a->tenant, a->endpoint);
                if (*rc == RELAY_DB_OK && changes) {
                        disabled = true;
                        *rc = relay_event_emit(db, a->tenant, "webhook.endpoint.disabled",
                                               json_pack("{s:s,s:s,s:s,s:I}", "id", a->endpoint, "url", url, "reason",
                                                         reason, "consecutive_failures", (json_int_t)failures),
                                               NULL);
                        relay_log(wh_self, RELAY_LOG_WARN, "endpoint %s of %s disabled: %s", a->endpoint, a->tenant,
                                  reason);
                }
        }
        free(url);
        return disabled;
}

/* Records A's answer: the endpoint's failure count, the log row, the
 * order row, the job's end, in a savepoint of the batch's transaction. */
static void record_answer(relay_db *db, attempt *a)
{
        relay_job *job = a->job;
        verdict v = a->v;
        int rc = relay_db_begin(db);
        bool disabled = false;
        if (rc == RELAY_DB_OK && v != OUT_DELIVERED)
                disabled = count_failure(db, a, a->why, &rc);
        else if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, NULL,
                                   "UPDATE webhooks_endpoints SET consecutive_failures = 0 WHERE tenant = ? AND id = ?"
                                   " AND consecutive_failures <> 0",
                                   "ss", a->tenant, a->endpoint);
        if (disabled && v == OUT_RETRY) { /* no retry will find it enabled */
                v = OUT_FAIL;
                size_t n = strlen(a->why);
                snprintf(a->why + n, sizeof(a->why) - n, "; the endpoint is now disabled");
        }
        const char *outcome = v == OUT_DELIVERED             ? "delivered"
                              : v == OUT_FAIL                ? "failed"
                              : a->number >= a->max_attempts ? "dead"
                                                             : "retrying";
        char id[WH_ID_LEN];
        relay_id_new("wha_", id, sizeof(id));
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, NULL,
                                   "INSERT INTO webhooks_attempts (id, tenant, endpoint_id, job_id, message_id,"
                                   " event_type, attempt, status_code, outcome, error, latency_ms, response_excerpt,"
                                   " created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, NULLIF(?, 0), ?, ?, ?, ?, ?)",
                                   "ssssssiissisi", id, a->tenant, a->endpoint, relay_job_id(job), a->message, a->type,
                                   (int64_t)a->number, (int64_t)a->status, outcome, v == OUT_DELIVERED ? NULL : a->why,
                                   a->latency_ms, a->excerpt, relay_now_ms());
        if (rc == RELAY_DB_OK && strcmp(outcome, "retrying") != 0)
                forget_pending(db, job);
        /* the job's end commits with its log row */
        if (v == OUT_DELIVERED)
                relay_job_done(job, 1, NULL, 0);
        else if (v == OUT_RETRY)
                relay_job_done(job, 0, a->why, a->retry_after);
        else
                relay_job_fail(job, a->why);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK)
                relay_log(wh_self, RELAY_LOG_WARN, "cannot log the delivery of %s to %s: %s", a->message, a->endpoint,
                          relay_db_errmsg(db));
}

/* Records every answer received so far, ANSWERS_PER_COMMIT per commit.  A
 * crash before the commit loses no delivery: the jobs stay running, their
 * leases expire, and they are delivered again (at least once, as before). */
void wh_deliver_flush(void)
{
        relay_timer_stop(record_soon);
        record_soon = NULL;
        attempt *list = answered;
        answered = NULL;
        answered_tail = &answered;
        relay_db *db = relay_plugin_db(wh_self);
        while (list) {
                bool tx = relay_db_begin(db) == RELAY_DB_OK;
                for (int n = 0; list && n < ANSWERS_PER_COMMIT; n++) {
                        attempt *a = list;
                        list = a->next;
                        record_answer(db, a);
                        free(a->excerpt);
                        free(a);
                }
                if (tx && relay_db_commit(db) != RELAY_DB_OK) {
                        relay_log(wh_self, RELAY_LOG_WARN,
                                  "cannot record webhook answers: %s (the deliveries run again when their leases "
                                  "expire)",
                                  relay_db_errmsg(db));
                        relay_db_rollback(db);
                }
        }
}

static void on_record_soon(relay_plugin *p, void *data)
{
        (void)p, (void)data;
        wh_deliver_flush();
}

static void on_answer(relay_plugin *p, const relay_http_response *res, void *data)
{
        attempt *a = data;
        if (res->error == RELAY_HTTP_CANCELLED) { /* shutdown: not the receiver's fault, not an attempt */
                relay_job_defer(a->job, 0, "the daemon stopped during the delivery");
                free(a);
                return;
        }
        a->v = judge(res, a->why, sizeof(a->why), &a->retry_after);
        a->status = res->status;
        a->latency_ms = (int64_t)(res->elapsed_ms + 0.5);
        a->excerpt = excerpt(res->body ? res->body : "", res->body_len, conf.response_excerpt);
        a->next = NULL;
        *answered_tail = a;
        answered_tail = &a->next;
        /* the other answers of this turn join it; recorded on the next */
        if (!record_soon && !(record_soon = relay_timer_start(p, 0, 0, on_record_soon, NULL)))
                wh_deliver_flush(); /* no timer (out of memory): now, alone */
}

/* ------------------------------------------------------------------ the job */

static void run(relay_plugin *p, relay_job *job, void *data)
{
        (void)data;
        relay_db *db = relay_plugin_db(p);
        json_t *payload = relay_job_payload(job);
        const char *tenant = relay_job_tenant(job);
        const char *endpoint = json_string_value(json_object_get(payload, "endpoint"));
        const char *message = json_string_value(json_object_get(payload, "message"));
        int64_t seq = json_integer_value(json_object_get(payload, "seq"));
        int max_attempts = (int)json_integer_value(json_object_get(payload, "max_attempts"));
        if (!tenant || !endpoint || !message || strlen(tenant) >= sizeof(((attempt *)0)->tenant) ||
            strlen(endpoint) >= WH_ID_LEN || strlen(message) >= WH_ID_LEN) {
                give_up(db, job, "malformed webhook.deliver job");
                return;
        }
        relay_db_result *r;
        int rc = wh_endpoint_load(db, tenant, endpoint, &r);
        if (rc != RELAY_DB_OK) {
                relay_db_free(r);
                relay_job_defer(job, STORAGE_WAIT_MS, "storage unavailable");
                return;
        }
        if (!relay_db_next(r)) {
                relay_db_free(r);
                give_up(db, job, "endpoint deleted");
                return;
        }
        if (relay_db_int(r, 4) == 0) {
                char why[512];
                snprintf(why, sizeof(why), "endpoint disabled: %s",
                         relay_db_text(r, 5) ? relay_db_text(r, 5) : "disabled");
                relay_db_free(r);
                give_up(db, job, why);
                return;
        }
        int64_t wait = order_wait(db, job, endpoint, seq, &rc);
        if (rc != RELAY_DB_OK || wait > 0) {
                relay_db_free(r);
                relay_job_defer(job, rc != RELAY_DB_OK ? STORAGE_WAIT_MS : wait,
                                rc != RELAY_DB_OK ? "storage unavailable"
                                                  : "waiting for an earlier event of the same record");
                return;
        }
        /* the secrets: the current one, and the previous one during its grace */
        uint8_t keys[2][WH_KEY_BYTES];
        int n_keys = 0;
        if (wh_secret_open(relay_db_text(r, 9), keys[0]) == RELAY_OK)
                n_keys = 1;
        if (n_keys && !relay_db_is_null(r, 11) && relay_db_int(r, 11) > relay_now_ms() &&
            wh_secret_open(relay_db_text(r, 10), keys[1]) == RELAY_OK)
                n_keys = 2;
        char *url = strdup(relay_db_text(r, 1));
        relay_db_free(r);
        if (!n_keys || !url) {
                free(url);
                relay_job_done(job, 0,
                               "cannot open the endpoint's secret: is [webhooks] secret_key_file the one it was made "
                               "with?",
                               0);
                return;
        }
        rc = relay_db_query(db, &r, "SELECT type, body FROM webhooks_messages WHERE tenant = ? AND id = ?", "ss",
                            tenant, message);
        if (rc != RELAY_DB_OK || !relay_db_next(r)) {
                relay_db_free(r);
                free(url);
                sodium_memzero(keys, sizeof(keys));
                if (rc != RELAY_DB_OK)
                        relay_job_defer(job, STORAGE_WAIT_MS, "storage unavailable");
                else
                        give_up(db, job, "message not found");
                return;
        }
        attempt *a = calloc(1, sizeof(*a));
        const char *type = relay_db_text(r, 0), *body = relay_db_text(r, 1);
        int64_t ts = relay_now_ms() / 1000;
        char sigs[2][WH_SIG_LEN];
        for (int i = 0; i < n_keys; i++)
                wh_sign(keys[i], message, ts, body, strlen(body), sigs[i]);
        sodium_memzero(keys, sizeof(keys));
        char h_id[80], h_ts[64], h_sig[2 * WH_SIG_LEN + 32];
        snprintf(h_id, sizeof(h_id), "webhook-id: %s", message);
        snprintf(h_ts, sizeof(h_ts), "webhook-timestamp: %lld", (long long)ts);
        snprintf(h_sig, sizeof(h_sig), "webhook-signature: %s%s%s", sigs[0], n_keys > 1 ? " " : "",
                 n_keys > 1 ? sigs[1] : "");
        const char *headers[] = {"Content-Type: application/json", h_id, h_ts, h_sig, NULL};
        if (a) {
                a->job = job;
                snprintf(a->tenant, sizeof(a->tenant), "%s", tenant);
                snprintf(a->endpoint, sizeof(a->endpoint), "%s", endpoint);
                snprintf(a->message, sizeof(a->message), "%s", message);
                snprintf(a->type, sizeof(a->type), "%s", type);
                a->number = relay_job_attempt(job);
                a->max_attempts = max_attempts > 0 ? max_attempts : 1;
        }
        relay_http_request req = {.size = sizeof(req),
                                  .method = "POST",
                                  .url = url,
                                  .headers = headers,
                                  .body = body,
                                  .body_len = strlen(body),
                                  .timeout_ms = conf.timeout_ms,
                                  .connect_timeout_ms = conf.connect_timeout_ms,
                                  .max_redirects = (int)conf.max_redirects,
                                  .allow_private = conf.allow_private,
                                  .max_response = conf.response_excerpt + 4};
        rc = a ? relay_http_fetch(p, &req, on_answer, a) : RELAY_ERR;
        relay_db_free(r);
        free(url);
        sodium_memzero(h_sig, sizeof(h_sig));
        if (rc != RELAY_OK) {
                free(a);
                relay_job_defer(job, STORAGE_WAIT_MS, "cannot start the request (out of memory, or stopping)");
        }
}

int wh_deliver_register(relay_plugin *p)
{
        int64_t n = relay_conf_int(p, "concurrency");
        return relay_job_handler(p, WH_JOB_KIND, n > 0 ? (int)n : 64, run, NULL);
}
