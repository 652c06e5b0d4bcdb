/* relay/jobs.h - the durable job queue.
 *
 * Jobs live in the database: they survive restarts, and with PostgreSQL
 * several daemons share one queue (claims use FOR UPDATE SKIP LOCKED; with
 * SQLite a claim is one write transaction, which SQLite serialises).  A
 * claimed job holds a lease; a daemon that dies mid-job loses the lease and
 * another claims the job again.  Failed jobs back off exponentially with
 * jitter and are dead-lettered after max_attempts. */
#ifndef RELAY_JOBS_H
#define RELAY_JOBS_H

#include <jansson.h>
#include <relay/common.h>
#include <relay/db.h>

RELAY_BEGIN_DECLS

typedef struct relay_job_spec {
        uint32_t size;      /* sizeof(relay_job_spec) */
        const char *tenant; /* may be NULL */
        const char *kind;   /* "webhook.deliver": picks the handler */
        const char *queue;  /* "default" when NULL */
        const char *target; /* what it acts on, for listings (a URL, a record id), may be NULL */
        json_t *payload;    /* borrowed; NULL is {} */
        int64_t run_at_ms;  /* 0: now */
        int max_attempts;   /* 0: [jobs] max_attempts */
} relay_job_spec;

/* Enqueues in DB's current transaction (or on its own).  ID_OUT (may be
 * NULL, 40 bytes) receives "job_...". */
RELAY_API int relay_job_enqueue(relay_db *db, const relay_job_spec *spec, char *id_out);

typedef struct relay_job relay_job; /* a claimed job, handed to a handler */

RELAY_API const char *relay_job_id(relay_job *job);
RELAY_API const char *relay_job_tenant(relay_job *job);
RELAY_API const char *relay_job_kind(relay_job *job);
RELAY_API const char *relay_job_target(relay_job *job);
RELAY_API json_t *relay_job_payload(relay_job *job); /* borrowed */
RELAY_API int relay_job_attempt(relay_job *job);     /* 1 on the first run */

/* A handler runs on the control thread and must not block: it finishes
 * the job now or later (after relay_plugin_work, an outbound request...)
 * with exactly one relay_job_done().  RETRY_AFTER_MS > 0 asks for that
 * delay instead of the exponential backoff (an HTTP Retry-After). */
typedef void (*relay_job_fn)(relay_plugin *p, relay_job *job, void *data);
RELAY_API void relay_job_done(relay_job *job, int ok, const char *error, int64_t retry_after_ms);

/* Fails the job for good: it goes to the dead letters now, whatever
 * attempts it has left (a webhook receiver answering 410).  (ABI 1.2) */
RELAY_API void relay_job_fail(relay_job *job, const char *error);

/* Finishes the job for now without counting an attempt: it runs again
 * after DELAY_MS.  For a job that waits on something else (the sync job
 * of a record waits for the record's webhook deliveries).  (ABI 1.1) */
RELAY_API void relay_job_defer(relay_job *job, int64_t delay_ms, const char *why);

/* How many of TENANT's jobs acting on TARGET are queued or running,
 * leaving out jobs of EXCEPT_KIND (NULL: none left out).  (ABI 1.1) */
RELAY_API int relay_job_pending(relay_db *db, const char *tenant, const char *target, const char *except_kind,
                                int64_t *count);

/* Runs jobs of KIND with FN, at most CONCURRENCY at once on this daemon.
 * Call in init(). */
RELAY_API int relay_job_handler(relay_plugin *p, const char *kind, int concurrency, relay_job_fn fn, void *data);

/* Jobs of KIND claimed together run in one transaction, committed once
 * after the last of them, with the end of every one that finished
 * (relay_job_done, _defer, _fail) inside its handler: one commit for the
 * claim instead of one or two per job.  Each handler runs in its own
 * savepoint; one whose statements fail is rolled back alone and its job
 * left to run again when its lease expires.  For short handlers that
 * finish before returning and whose writes may become durable together
 * (a crash before the commit runs them all again).  Call in init(), after
 * relay_job_handler.  (ABI 1.3) */
RELAY_API int relay_job_batch(relay_plugin *p, const char *kind);

/* Makes a queued, failed or dead job due now (attempts kept; a dead job
 * gets one more attempt).  RELAY_DB_OK, or RELAY_ERR when TENANT has no such job. */
RELAY_API int relay_job_retry_now(relay_db *db, const char *tenant, const char *id);

/* A page of TENANT's jobs, newest first: STATE NULL for all ("queued",
 * "running", "done", "dead"), AFTER_ID NULL for the first page.  Each row:
 * id, kind, queue, target, state, attempts, max_attempts, next_attempt_at (ms),
 * last_error, created_at (ms), updated_at (ms). */
RELAY_API int relay_job_list(relay_db *db, relay_db_result **out, const char *tenant, const char *state,
                             const char *after_id, int limit);

/* A row of relay_job_list or relay_job_get as the API shows a job: {id,
 * kind, queue, target, state, attempts, max_attempts, next_attempt_at
 * (RFC 3339 while queued, else null), last_error, created_at,
 * updated_at}.  (ABI 1.2) */
RELAY_API json_t *relay_job_json(relay_db_result *r);

/* One of TENANT's jobs by id, as a row of relay_job_list (no row when
 * there is none).  (ABI 1.1) */
RELAY_API int relay_job_get(relay_db *db, relay_db_result **out, const char *tenant, const char *id);

RELAY_END_DECLS
#endif
