/* storebench.c - the plugin contrib/bench/storage-bench loads: single-row
 * write transactions and no-op jobs through <relay/db.h> and <relay/jobs.h>,
 * on the daemon's worker threads, so the benchmark can set them against the
 * raw engine.  Not installed; `make bench-plugins` builds it.
 *
 *   POST /bench/insert?n=N   N transactions of one INSERT each on this
 *                            worker's connection: {"inserted": N}
 *   POST /bench/jobs?n=N     enqueues N "bench.noop" jobs (one transaction)
 *   GET  /bench/jobs/done    {"done": jobs of kind bench.noop in state done}
 *   GET  /bench/rows         {"rows": rows in bench_rows, "body": the row body}
 *
 * A failed storage call answers in the plugin's error style with the rows
 * inserted before it ("inserted") and the driver's message, so the
 * benchmark can report exactly what went wrong. */
#include <stdio.h>
#include <string.h>
#include <relay/plugin.h>

#define MAX_N 100000

/* Every row carries this body (100 bytes); GET /bench/rows hands it to the
 * script so the raw-engine runs insert the very same rows. */
static const char body[] = "storage-bench row: 100 bytes of text, the same for the daemon and the raw engine runs. "
                           "0123456789abc";

static const relay_migration migrations[] = {
        {1, NULL,
         "CREATE TABLE bench_rows (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, body TEXT NOT NULL, "
         "created_ms BIGINT NOT NULL);",
         "CREATE TABLE bench_rows (id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, body TEXT NOT NULL, "
         "created_ms BIGINT NOT NULL);"},
        {0, NULL, NULL, NULL}};

/* A storage failure: the status relay_db_reply_error would use, plus what
 * the benchmark needs to report it.  An open transaction is rolled back
 * after the driver's message is read. */
static int fail(relay_req *req, int rc, const char *what, long done)
{
        relay_db *db = relay_db_of(req);
        char msg[512];
        const char *m = relay_db_errmsg(db);
        snprintf(msg, sizeof(msg), "%s", m && *m ? m : what);
        if (relay_db_in_transaction(db))
                relay_db_rollback(db);
        int status = rc == RELAY_DB_CONSTRAINT ? 409 : rc == RELAY_DB_ERROR ? 500 : 503;
        const char *code = rc == RELAY_DB_CONSTRAINT ? "conflict"
                           : rc == RELAY_DB_BUSY     ? "busy"
                           : rc == RELAY_DB_ERROR    ? "storage_error"
                                                     : "unavailable";
        relay_req_log(req, RELAY_LOG_WARN, "%s failed after %ld: %s (db status %d)", what, done, msg, rc);
        return relay_error_json(
                req, status, code, msg,
                json_pack("{s:s,s:I,s:i}", "step", what, "inserted", (json_int_t)done, "db_status", rc));
}

static long count_of(relay_req *req, bool *bad) { return relay_query_limit(req, "n", 1, MAX_N, bad); }

static int post_insert(relay_req *req)
{
        bool bad;
        long n = count_of(req, &bad);
        if (bad)
                return relay_error(req, 400, "bad_n", "n must be an integer in [1, %d]", MAX_N);
        relay_db *db = relay_db_of(req);
        for (long i = 0; i < n; i++) {
                int rc = relay_db_begin(db);
                if (rc != RELAY_DB_OK)
                        return fail(req, rc, "begin", i);
                rc = relay_db_exec(db, NULL, "INSERT INTO bench_rows (tenant, body, created_ms) VALUES (?, ?, ?)",
                                   "ssi", "bench", body, relay_now_ms());
                if (rc != RELAY_DB_OK)
                        return fail(req, rc, "insert", i);
                rc = relay_db_commit(db);
                if (rc != RELAY_DB_OK)
                        return fail(req, rc, "commit", i);
        }
        return relay_reply_json(req, 200, json_pack("{s:I}", "inserted", (json_int_t)n));
}

static int post_jobs(relay_req *req)
{
        bool bad;
        long n = count_of(req, &bad);
        if (bad)
                return relay_error(req, 400, "bad_n", "n must be an integer in [1, %d]", MAX_N);
        relay_db *db = relay_db_of(req);
        relay_job_spec spec = {.size = sizeof(spec), .tenant = "bench", .kind = "bench.noop", .target = "bench"};
        /* One transaction for the batch: the jobs become claimable together,
         * at commit, and the figure is about the queue, not per-row commits. */
        int rc = relay_db_begin(db);
        if (rc != RELAY_DB_OK)
                return fail(req, rc, "begin", 0);
        for (long i = 0; i < n; i++) {
                rc = relay_job_enqueue(db, &spec, NULL);
                if (rc != RELAY_DB_OK)
                        return fail(req, rc, "enqueue", 0);
        }
        rc = relay_db_commit(db);
        if (rc != RELAY_DB_OK)
                return fail(req, rc, "commit", 0);
        return relay_reply_json(req, 200, json_pack("{s:I}", "enqueued", (json_int_t)n));
}

static int reply_count(relay_req *req, const char *key, const char *sql)
{
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r, sql, "");
        if (rc != RELAY_DB_OK)
                return fail(req, rc, key, 0);
        json_int_t n = relay_db_next(r) ? (json_int_t)relay_db_int(r, 0) : -1;
        relay_db_free(r);
        json_t *doc = json_pack("{s:I}", key, n);
        if (strcmp(key, "rows") == 0)
                json_object_set_new(doc, "body", json_string(body));
        return relay_reply_json(req, 200, doc);
}

static int get_jobs_done(relay_req *req)
{
        return reply_count(req, "done", "SELECT COUNT(*) FROM relay_jobs WHERE kind = 'bench.noop' AND state = 'done'");
}

static int get_rows(relay_req *req) { return reply_count(req, "rows", "SELECT COUNT(*) FROM bench_rows"); }

/* Runs on the control thread: finish at once, so the figure is the queue's
 * own cost (claim and completion). */
static void noop_job(relay_plugin *p, relay_job *job, void *data) { relay_job_done(job, 1, NULL, 0); }

static int init(relay_plugin *p)
{
        relay_conf_declare(p, "job_concurrency", RELAY_CONF_INT, "64", "bench.noop jobs claimed at once");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_migrations(p, migrations) != RELAY_OK ||
            relay_job_handler(p, "bench.noop", (int)relay_conf_int(p, "job_concurrency"), noop_job, NULL) != RELAY_OK)
                return RELAY_ERR;
        if (relay_route(p, "POST", "/bench/insert", post_insert, RELAY_AUTH_PUBLIC) != RELAY_OK ||
            relay_route(p, "POST", "/bench/jobs", post_jobs, RELAY_AUTH_PUBLIC) != RELAY_OK ||
            relay_route(p, "GET", "/bench/jobs/done", get_jobs_done, RELAY_AUTH_PUBLIC) != RELAY_OK ||
            relay_route(p, "GET", "/bench/rows", get_rows, RELAY_AUTH_PUBLIC) != RELAY_OK)
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(storebench, .version = "0.1.0", .description = "contrib/bench/storage-bench: storage and job queue load",
             .init = init);
