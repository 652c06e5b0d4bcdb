/* jobs.c - the durable job queue (relay/jobs.h).
 *
 * A claim is one UPDATE ... RETURNING over the due jobs of a kind: on
 * PostgreSQL the inner SELECT takes FOR UPDATE SKIP LOCKED, so daemons
 * sharing the database never claim the same job; on SQLite the statement
 * holds the database's single write lock.  A claim sets a lease and the
 * daemon's id; completion only counts while both still hold, so a job
 * whose lease expired and was claimed elsewhere is not completed twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "events_internal.h"
#include "log.h"
#include "settings.h"
#include "storage.h"

typedef struct handler {
        struct handler *next;
        relay_plugin *plugin;
        char *kind;
        int concurrency, running;
        bool batch; /* relay_job_batch: a claim's jobs share one transaction */
        relay_job_fn fn;
        void *data;
} handler;

struct relay_job {
        struct relay_job *prev, *next; /* the claims this daemon holds */
        handler *h;
        char id[40];
        char *tenant, *kind, *target;
        json_t *payload;
        int attempt, max_attempts;
        int64_t started_ms, renewed_ms;
        bool done;
        bool abandoned; /* ran past [jobs] timeout: its slot and lease are given up */
};

static relay_job *claims;    /* held by this daemon, renewed while they run */
static relay_job *abandoned; /* given up; freed when (if) their handler finishes */
static bool claim_failing;   /* log a failing claim once, not on every poll */

static handler *handlers;
static uv_async_t kick;
static uv_timer_t poll_timer;
static bool started;
static char daemon_id[40]; /* who holds a lease */

static uint64_t conf_ms(const char *key) { return conf_get_duration_ms(settings_current()->cfg, "jobs", key); }

RELAY_API int relay_job_enqueue(relay_db *db, const relay_job_spec *spec, char *id_out)
{
        if (!db || !spec || spec->size < offsetof(relay_job_spec, max_attempts) + sizeof(int) || !spec->kind)
                return RELAY_DB_ERROR;
        char id[40];
        relay_id_new("job_", id, sizeof(id));
        int64_t now = relay_now_ms();
        int max = spec->max_attempts > 0 ? spec->max_attempts
                                         : (int)conf_get_int(settings_current()->cfg, "jobs", "max_attempts");
        json_t *payload = spec->payload ? json_incref(spec->payload) : json_object();
        int rc = relay_db_exec(db, NULL,
                               "INSERT INTO relay_jobs (id, tenant, kind, queue, target, payload, state, attempts, "
                               "max_attempts, run_at, created_at, updated_at) "
                               "VALUES (?, ?, ?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?)",
                               "sssssjiiii", id, spec->tenant, spec->kind, spec->queue ? spec->queue : "default",
                               spec->target, payload, (int64_t)max, spec->run_at_ms ? spec->run_at_ms : now, now, now);
        json_decref(payload);
        if (rc != RELAY_DB_OK)
                return rc;
        if (relay_db_in_transaction(db))
                db->enqueued = true; /* run it once the transaction commits */
        else
                jobs_kick();
        if (id_out)
                memcpy(id_out, id, strlen(id) + 1);
        return RELAY_DB_OK;
}

RELAY_API int relay_job_handler(relay_plugin *p, const char *kind, int concurrency, relay_job_fn fn, void *data)
{
        if (relay_daemon.initialising != p || !kind || !fn)
                return RELAY_ERR;
        handler *h = calloc(1, sizeof(*h));
        if (!h || !(h->kind = strdup(kind))) {
                free(h);
                return RELAY_ERR;
        }
        h->plugin = p;
        h->concurrency = concurrency > 0 ? concurrency : 1;
        h->fn = fn;
        h->data = data;
        h->next = handlers;
        handlers = h;
        return RELAY_OK;
}

RELAY_API int relay_job_batch(relay_plugin *p, const char *kind)
{
        for (handler *h = handlers; h; h = h->next)
                if (h->plugin == p && kind && strcmp(h->kind, kind) == 0 && relay_daemon.initialising == p) {
                        h->batch = true;
                        return RELAY_OK;
                }
        return RELAY_ERR;
}

RELAY_API const char *relay_job_id(relay_job *job) { return job->id; }
RELAY_API const char *relay_job_tenant(relay_job *job) { return job->tenant; }
RELAY_API const char *relay_job_kind(relay_job *job) { return job->kind; }
RELAY_API const char *relay_job_target(relay_job *job) { return job->target; }
RELAY_API json_t *relay_job_payload(relay_job *job) { return job->payload; }
RELAY_API int relay_job_attempt(relay_job *job) { return job->attempt; }

static void list_link(relay_job **list, relay_job *job)
{
        job->prev = NULL;
        job->next = *list;
        if (*list)
                (*list)->prev = job;
        *list = job;
}

static void list_unlink(relay_job **list, relay_job *job)
{
        if (job->prev)
                job->prev->next = job->next;
        else if (*list == job)
                *list = job->next;
        if (job->next)
                job->next->prev = job->prev;
        job->prev = job->next = NULL;
}

static void job_free(relay_job *job)
{
        json_decref(job->payload);
        free(job->tenant), free(job->kind), free(job->target);
        free(job);
}

/* Exponential backoff with "equal jitter": half the delay fixed, half random,
 * so retries of many failed jobs spread out instead of arriving together. */
static int64_t backoff_ms(int attempt)
{
        uint64_t base = conf_ms("backoff_base"), max = conf_ms("backoff_max");
        uint64_t d = base;
        for (int i = 1; i < attempt && d < max; i++)
                d *= 2;
        if (d > max)
                d = max;
        uint32_t r;
        relay_random(&r, sizeof(r));
        return (int64_t)(d / 2 + (d / 2 ? r % (d / 2 + 1) : 0));
}

/* Not now, and not a failure: back in the queue for DELAY_MS with the
 * attempt given back, so waiting never leads to the dead letters. */
static int requeue_uncounted(relay_db *db, relay_job *job, const char *why, int64_t delay, int64_t *changes)
{
        int64_t now = relay_now_ms();
        return relay_db_exec(db, changes,
                             "UPDATE relay_jobs SET state = 'queued', lease_until = NULL, last_error = ?, run_at = ?,"
                             " updated_at = ?, attempts = attempts - 1 WHERE id = ? AND state = 'running'"
                             " AND locked_by = ? AND attempts = ?",
                             "siissi", why, now + (delay > 0 ? delay : 1000), now, job->id, daemon_id,
                             (int64_t)job->attempt);
}

RELAY_API void relay_job_defer(relay_job *job, int64_t delay_ms, const char *why)
{
        if (!job || job->done)
                return;
        if (job->abandoned) {
                relay_job_done(job, 0, why, delay_ms);
                return;
        }
        job->done = true;
        list_unlink(&claims, job);
        int64_t changes = 0;
        relay_db *db = storage_control_db();
        if (requeue_uncounted(db, job, why ? why : "deferred", delay_ms, &changes) != RELAY_DB_OK)
                log_warn("jobs: cannot defer %s: %s (its lease will expire)", job->id, relay_db_errmsg(db));
        job->h->running--;
        job_free(job);
        jobs_kick();
}

RELAY_API int relay_job_pending(relay_db *db, const char *tenant, const char *target, const char *except_kind,
                                int64_t *count)
{
        relay_db_result *r;
        int rc = relay_db_query(db, &r,
                                "SELECT COUNT(*) FROM relay_jobs WHERE tenant = ? AND target = ?"
                                " AND state IN ('queued', 'running') AND (CAST(? AS TEXT) IS NULL OR kind <> ?)",
                                "ssss", tenant, target, except_kind, except_kind);
        *count = rc == RELAY_DB_OK && relay_db_next(r) ? relay_db_int(r, 0) : 0;
        relay_db_free(r);
        return rc;
}

RELAY_API void relay_job_fail(relay_job *job, const char *error)
{
        if (job && !job->done)
                job->max_attempts = job->attempt; /* no attempts left: relay_job_done dead-letters it */
        relay_job_done(job, 0, error, 0);
}

RELAY_API void relay_job_done(relay_job *job, int ok, const char *error, int64_t retry_after_ms)
{
        if (!job || job->done)
                return;
        job->done = true;
        if (job->abandoned) { /* its result came too late: the job is someone else's now */
                log_write(RELAY_LOG_WARN, job->h->plugin->name, NULL,
                          "job %s finished after it was abandoned; result dropped", job->id);
                list_unlink(&abandoned, job);
                job_free(job);
                return;
        }
        list_unlink(&claims, job);
        relay_db *db = storage_control_db();
        int64_t now = relay_now_ms(), changes = 0;
        int rc;
        if (ok) {
                rc = relay_db_exec(
                        db, &changes,
                        "UPDATE relay_jobs SET state = 'done', lease_until = NULL, last_error = NULL, "
                        "updated_at = ? WHERE id = ? AND state = 'running' AND locked_by = ? AND attempts = ?",
                        "issi", now, job->id, daemon_id, (int64_t)job->attempt);
        } else if (job->attempt >= job->max_attempts) {
                rc = relay_db_exec(
                        db, &changes,
                        "UPDATE relay_jobs SET state = 'dead', lease_until = NULL, last_error = ?, "
                        "updated_at = ? WHERE id = ? AND state = 'running' AND locked_by = ? AND attempts = ?",
                        "sissi", error ? error : "failed", now, job->id, daemon_id, (int64_t)job->attempt);
                log_write(RELAY_LOG_WARN, job->h->plugin->name, NULL, "job %s (%s) dead after %d attempts: %s", job->id,
                          job->kind, job->attempt, error ? error : "failed");
        } else {
                int64_t delay = retry_after_ms > 0 ? retry_after_ms : backoff_ms(job->attempt);
                /* a delay past the end of the clock waits that long, not wraps into the past */
                int64_t run_at = delay < INT64_MAX - now ? now + delay : INT64_MAX;
                rc = relay_db_exec(db, &changes,
                                   "UPDATE relay_jobs SET state = 'queued', lease_until = NULL, last_error = ?, "
                                   "run_at = ?, updated_at = ? WHERE id = ? AND state = 'running' AND locked_by = ? "
                                   "AND attempts = ?",
                                   "siissi", error ? error : "failed", run_at, now, job->id, daemon_id,
                                   (int64_t)job->attempt);
        }
        if (rc != RELAY_DB_OK)
                log_warn("jobs: cannot record the end of %s: %s (its lease will expire)", job->id, relay_db_errmsg(db));
        else if (changes == 0)
                log_warn("jobs: %s lost its lease before finishing; its result is dropped", job->id);
        job->h->running--;
        job_free(job);
        jobs_kick();
}

/* Jobs whose lease ran out (their daemon died or hung) go back to the
 * queue, or to the dead letters with no attempts left.  Separate from the
 * claim, and on the (state, lease_until) index, so a poll costs the same
 * however many finished jobs the table holds. */
static void reclaim_expired(relay_db *db, int64_t now)
{
        relay_db_exec(db, NULL,
                      "UPDATE relay_jobs SET state = 'dead', lease_until = NULL, updated_at = ?, "
                      "last_error = COALESCE(last_error, 'lease expired') "
                      "WHERE state = 'running' AND lease_until < ? AND attempts >= max_attempts",
                      "ii", now, now);
        relay_db_exec(db, NULL,
                      "UPDATE relay_jobs SET state = 'queued', lease_until = NULL, run_at = ?, updated_at = ?, "
                      "last_error = COALESCE(last_error, 'lease expired') "
                      "WHERE state = 'running' AND lease_until < ?",
                      "iii", now, now, now);
}

/* Finished jobs are kept [jobs] keep_done for the queue listings. */
static void purge_done(relay_db *db, int64_t now)
{
        static int64_t last;
        if (now - last < 60000)
                return;
        last = now;
        relay_db_exec(db, NULL, "DELETE FROM relay_jobs WHERE state = 'done' AND updated_at < ?", "i",
                      now - (int64_t)conf_ms("keep_done"));
}

/* Runs JOB's handler; in a batch, inside a savepoint of its own, so a
 * handler whose statements failed (PostgreSQL then refuses the rest of
 * the transaction) is undone alone, end of job included. */
static void run_handler(relay_db *db, handler *h, relay_job *job, bool batch)
{
        bool own = batch && relay_db_begin(db) == RELAY_DB_OK;
        h->fn(h->plugin, job, h->data);
        if (own && relay_db_commit(db) != RELAY_DB_OK) {
                log_warn("jobs: a %s job's work failed in its batch: %s (it runs again when its lease expires)",
                         h->kind, relay_db_errmsg(db));
                relay_db_rollback(db);
        }
}

/* Commits a batch's transaction; false (and a warning) when its jobs must
 * wait for their leases to run again. */
static bool batch_commit(relay_db *db, handler *h)
{
        if (relay_db_commit(db) == RELAY_DB_OK)
                return true;
        log_warn("jobs: cannot commit a batch of %s jobs: %s (they run again when their leases expire)", h->kind,
                 relay_db_errmsg(db));
        return false;
}

static void claim(relay_db *db, handler *h, int64_t now)
{
        int want = h->concurrency - h->running;
        if (want <= 0)
                return;
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "UPDATE relay_jobs SET state = 'running', attempts = attempts + 1, lease_until = ?, locked_by = ?, "
                 "updated_at = ? WHERE id IN (SELECT id FROM relay_jobs WHERE kind = ? AND state = 'queued' "
                 "AND run_at <= ? AND attempts < max_attempts ORDER BY run_at LIMIT ?%s) "
                 "RETURNING id, tenant, kind, target, payload, attempts, max_attempts",
                 strcmp(relay_db_dialect(db), "pgsql") == 0 ? " FOR UPDATE SKIP LOCKED" : "");
        relay_db_result *r;
        if (relay_db_query(db, &r, sql, "isisii", now + (int64_t)conf_ms("lease"), daemon_id, now, h->kind, now,
                           (int64_t)want) != RELAY_DB_OK) {
                if (!claim_failing)
                        log_warn("jobs: claim failed (will keep trying quietly): %s", relay_db_errmsg(db));
                claim_failing = true;
                return;
        }
        if (claim_failing)
                log_info("jobs: claims work again");
        claim_failing = false;
        /* relay_job_batch: the claim's jobs share one transaction */
        bool batch =
                h->batch && relay_db_rows(r) > 0 && !relay_db_in_transaction(db) && relay_db_begin(db) == RELAY_DB_OK;
        while (relay_db_next(r)) {
                relay_job *job = calloc(1, sizeof(*job));
                if (!job)
                        break;
                job->h = h;
                snprintf(job->id, sizeof(job->id), "%s", relay_db_text(r, 0));
                const char *tenant = relay_db_text(r, 1), *target = relay_db_text(r, 3);
                job->tenant = tenant ? strdup(tenant) : NULL;
                job->kind = strdup(relay_db_text(r, 2));
                job->target = target ? strdup(target) : NULL;
                job->payload = relay_db_json(r, 4);
                if (!job->payload)
                        job->payload = json_object();
                job->attempt = (int)relay_db_int(r, 5);
                job->max_attempts = (int)relay_db_int(r, 6);
                job->started_ms = job->renewed_ms = now;
                list_link(&claims, job);
                h->running++;
                if (batch && storage_tx_full(db)) /* PostgreSQL's subtransactions: go on in a new transaction */
                        batch = batch_commit(db, h) && relay_db_begin(db) == RELAY_DB_OK;
                run_handler(db, h, job, batch);
        }
        relay_db_free(r);
        if (batch)
                batch_commit(db, h);
}

/* Running claims keep their lease; one that outlived [jobs] timeout is
 * given up: its slot frees, its lease runs out, and it is claimed again
 * (or dead-lettered) like the job of a daemon that died. */
static void renew_claims(relay_db *db, int64_t now)
{
        int64_t lease = (int64_t)conf_ms("lease"), timeout = (int64_t)conf_ms("timeout");
        for (relay_job *job = claims, *next; job; job = next) {
                next = job->next;
                if (timeout && now - job->started_ms > timeout) {
                        log_write(RELAY_LOG_WARN, job->h->plugin->name, NULL,
                                  "job %s (%s) ran longer than [jobs] timeout: abandoned; it will run again when its "
                                  "lease expires",
                                  job->id, job->kind);
                        list_unlink(&claims, job);
                        list_link(&abandoned, job);
                        job->abandoned = true;
                        job->h->running--;
                        continue;
                }
                if (now - job->renewed_ms < lease / 3)
                        continue;
                if (relay_db_exec(db, NULL,
                                  "UPDATE relay_jobs SET lease_until = ? WHERE id = ? AND state = 'running' "
                                  "AND locked_by = ? AND attempts = ?",
                                  "issi", now + lease, job->id, daemon_id, (int64_t)job->attempt) == RELAY_DB_OK)
                        job->renewed_ms = now;
        }
}

static void poll_jobs(void)
{
        relay_db *db = storage_control_db();
        int64_t now = relay_now_ms();
        renew_claims(db, now);
        reclaim_expired(db, now);
        purge_done(db, now);
        for (handler *h = handlers; h; h = h->next)
                claim(db, h, now);
}

static void on_kick(uv_async_t *a) { poll_jobs(); }
static void on_poll(uv_timer_t *t) { poll_jobs(); }

void jobs_kick(void)
{
        if (__atomic_load_n(&started, __ATOMIC_ACQUIRE))
                uv_async_send(&kick);
}

int jobs_start(void)
{
        relay_id_new("dmn_", daemon_id, sizeof(daemon_id));
        if (!handlers)
                return 0;
        uint64_t every = conf_ms("poll_interval"), lease = conf_ms("lease");
        if (lease && every > lease / 3)
                every = lease / 3; /* often enough to renew running jobs' leases */
        uv_async_init(relay_daemon.loop, &kick, on_kick);
        uv_timer_init(relay_daemon.loop, &poll_timer);
        uv_timer_start(&poll_timer, on_poll, 0, every ? every : 1000);
        __atomic_store_n(&started, true, __ATOMIC_RELEASE);
        return 0;
}

void jobs_stop(void)
{
        if (!__atomic_load_n(&started, __ATOMIC_ACQUIRE))
                return;
        __atomic_store_n(&started, false, __ATOMIC_RELEASE);
        uv_close((uv_handle_t *)&kick, NULL);
        uv_close((uv_handle_t *)&poll_timer, NULL);
}

void jobs_free(void)
{
        relay_job **lists[] = {&claims, &abandoned};
        for (size_t i = 0; i < 2; i++)
                while (*lists[i]) { /* never finished: their leases expire elsewhere */
                        relay_job *job = *lists[i];
                        list_unlink(lists[i], job);
                        job_free(job);
                }
        for (handler *h = handlers, *n; h; h = n) {
                n = h->next;
                free(h->kind), free(h);
        }
        handlers = NULL;
}

/* ------------------------------------------------------------ operations */

RELAY_API int relay_job_retry_now(relay_db *db, const char *tenant, const char *id)
{
        int64_t now = relay_now_ms(), changes = 0;
        int rc = relay_db_exec(
                db, &changes,
                "UPDATE relay_jobs SET state = 'queued', run_at = ?, updated_at = ?, "
                "max_attempts = CASE WHEN attempts >= max_attempts THEN attempts + 1 ELSE max_attempts END "
                "WHERE id = ? AND tenant = ? AND state IN ('queued', 'dead')",
                "iiss", now, now, id, tenant);
        if (rc != RELAY_DB_OK)
                return rc;
        if (changes == 0)
                return RELAY_ERR;
        jobs_kick();
        return RELAY_DB_OK;
}

RELAY_API int relay_job_get(relay_db *db, relay_db_result **out, const char *tenant, const char *id)
{
        return relay_db_query(db, out,
                              "SELECT id, kind, queue, target, state, attempts, max_attempts, run_at, last_error, "
                              "created_at, updated_at FROM relay_jobs WHERE tenant = ? AND id = ?",
                              "ss", tenant, id);
}

RELAY_API int relay_job_list(relay_db *db, relay_db_result **out, const char *tenant, const char *state,
                             const char *after_id, int limit)
{
        return relay_db_query(db, out,
                              "SELECT id, kind, queue, target, state, attempts, max_attempts, run_at, last_error, "
                              "created_at, updated_at FROM relay_jobs WHERE tenant = ? "
                              "AND (CAST(? AS TEXT) IS NULL OR state = ?) AND (CAST(? AS TEXT) IS NULL OR id < ?) "
                              "ORDER BY id DESC LIMIT ?",
                              "sssssi", tenant, state, state, after_id, after_id, (int64_t)(limit > 0 ? limit : 50));
}

RELAY_API json_t *relay_job_json(relay_db_result *r)
{
        char next[40], created[40], updated[40];
        bool waiting = strcmp(relay_db_text(r, 4), "queued") == 0;
        return json_pack("{s:s,s:s,s:s,s:s?,s:s,s:I,s:I,s:s?,s:s?,s:s,s:s}", "id", relay_db_text(r, 0), "kind",
                         relay_db_text(r, 1), "queue", relay_db_text(r, 2), "target", relay_db_text(r, 3), "state",
                         relay_db_text(r, 4), "attempts", (json_int_t)relay_db_int(r, 5), "max_attempts",
                         (json_int_t)relay_db_int(r, 6), "next_attempt_at",
                         waiting ? relay_time_format(relay_db_int(r, 7), next, sizeof(next)) : NULL, "last_error",
                         relay_db_text(r, 8), "created_at",
                         relay_time_format(relay_db_int(r, 9), created, sizeof(created)), "updated_at",
                         relay_time_format(relay_db_int(r, 10), updated, sizeof(updated)));
}
