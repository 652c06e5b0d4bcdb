/* storetest.c - a test plugin over the storage SDK: typed round trips,
 * transactions, unique violations, the outbox and the job queue, each
 * behind an HTTP route so the conformance suite can drive both engines
 * through the real daemon.  The tenant comes from X-Tenant. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <relay/plugin.h>

static const char *tenant(relay_req *req)
{
        const char *t = relay_header(req, "X-Tenant");
        return t ? t : "t1";
}

static int db_fail(relay_req *req, int rc) { return relay_db_reply_error(req, rc); }

/* ------------------------------------------------------------ round trips */

static int post_kv(relay_req *req)
{
        json_t *b = relay_json_body(req);
        if (!b)
                return RELAY_OK;
        const char *b64 = json_string_value(json_object_get(b, "b64"));
        unsigned char blob[4096];
        int blen = b64 ? relay_b64url_decode(b64, blob, sizeof(blob)) : 0;
        if (blen < 0)
                return relay_error(req, 400, "bad_b64", "b64 is not base64url");
        relay_db *db = relay_db_of(req);
        json_t *j = json_object_get(b, "j");
        int rc = relay_db_exec(db, NULL, "INSERT INTO st_kv (k, tenant, i, d, s, b, j) VALUES (?, ?, ?, ?, ?, ?, ?)",
                               "ssidsbj", json_string_value(json_object_get(b, "k")), tenant(req),
                               (int64_t)json_integer_value(json_object_get(b, "i")),
                               json_number_value(json_object_get(b, "d")), json_string_value(json_object_get(b, "s")),
                               (const void *)blob, (size_t)blen, j);
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        return relay_reply_json(req, 201, json_pack("{s:O}", "k", json_object_get(b, "k")));
}

static int get_kv(relay_req *req)
{
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r, "SELECT k, i, d, s, b, j FROM st_kv WHERE tenant = ? AND k = ?",
                                "ss", tenant(req), relay_param(req, "k"));
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        if (!relay_db_next(r)) {
                relay_db_free(r);
                return relay_error(req, 404, "not_found", "no such key");
        }
        size_t blen;
        const void *blob = relay_db_blob(r, 4, &blen);
        char b64[RELAY_B64_LEN(4096)];
        relay_b64url_encode(blob ? blob : "", blen, b64, sizeof(b64));
        json_t *doc = json_pack("{s:s,s:I,s:f,s:s?,s:s,s:o?,s:s}", "k", relay_db_text(r, 0), "i",
                                (json_int_t)relay_db_int(r, 1), "d", relay_db_double(r, 2), "s", relay_db_text(r, 3),
                                "b64", b64, "j", relay_db_json(r, 5), "dialect", relay_db_dialect(relay_db_of(req)));
        relay_db_free(r);
        return relay_reply_json(req, 200, doc);
}

/* ------------------------------------------------- transactions and events */

static int post_tx(relay_req *req)
{
        json_t *b = relay_json_body(req);
        if (!b)
                return RELAY_OK;
        const char *k = json_string_value(json_object_get(b, "k"));
        const char *type = json_string_value(json_object_get(b, "event"));
        relay_db *db = relay_db_of(req);
        char inner[256], event_id[40] = "";
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, NULL, "INSERT INTO st_kv (k, tenant, i) VALUES (?, ?, 1)", "ss", k, tenant(req));
        if (rc == RELAY_DB_OK && type) /* "bare": an event without a payload */
                rc = relay_event_emit(db, tenant(req), type,
                                      json_is_true(json_object_get(b, "bare")) ? NULL : json_pack("{s:s}", "k", k),
                                      event_id);
        if (rc == RELAY_DB_OK && json_is_true(json_object_get(b, "nested"))) {
                /* a savepoint that rolls back alone */
                snprintf(inner, sizeof(inner), "%s-inner", k);
                rc = relay_db_begin(db);
                if (rc == RELAY_DB_OK)
                        rc = relay_db_exec(db, NULL, "INSERT INTO st_kv (k, tenant, i) VALUES (?, ?, 2)", "ss", inner,
                                           tenant(req));
                if (rc == RELAY_DB_OK)
                        rc = relay_db_rollback(db);
        }
        bool rollback = json_is_true(json_object_get(b, "rollback"));
        if (rc == RELAY_DB_OK)
                rc = rollback ? relay_db_rollback(db) : relay_db_commit(db);
        else if (relay_db_in_transaction(db))
                relay_db_rollback(db);
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        return relay_reply_json(req, rollback ? 200 : 201,
                                json_pack("{s:b,s:s}", "committed", !rollback, "event_id", event_id));
}

/* POST /store/write {"id"}: one row and one event per acknowledged write,
 * for the crash test: after kill -9 every 2xx must be there exactly once. */
static int post_write(relay_req *req)
{
        json_t *b = relay_json_body(req);
        if (!b)
                return RELAY_OK;
        const char *id = json_string_value(json_object_get(b, "id"));
        if (!id)
                return relay_error(req, 422, "id_required", "id is required");
        relay_db *db = relay_db_of(req);
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(
                        db, NULL,
                        "INSERT INTO st_writes (id, tenant, created_ms) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                        "ssi", id, tenant(req), relay_now_ms());
        if (rc == RELAY_DB_OK)
                rc = relay_event_emit(db, tenant(req), "st.write", json_pack("{s:s}", "id", id), NULL);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        return relay_reply_json(req, 201, json_pack("{s:s}", "id", id));
}

static int post_counter(relay_req *req)
{
        relay_db *db = relay_db_of(req);
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, NULL,
                                   "INSERT INTO st_counter (name, v) VALUES ('hits', 1) "
                                   "ON CONFLICT (name) DO UPDATE SET v = st_counter.v + 1",
                                   "");
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        return relay_reply_empty(req, 204);
}

static int reply_rows(relay_req *req, const char *sql, const char *types, const char *a)
{
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r, sql, types, a);
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        json_t *rows = json_array();
        while (relay_db_next(r)) {
                json_t *row = json_object();
                for (size_t c = 0; c < relay_db_columns(r); c++)
                        json_object_set_new(row, relay_db_column_name(r, c),
                                            relay_db_is_null(r, c) ? json_null() : json_string(relay_db_text(r, c)));
                json_array_append_new(rows, row);
        }
        relay_db_free(r);
        return relay_reply_json(req, 200, json_pack("{s:o}", "rows", rows));
}

static int get_counter(relay_req *req)
{
        return reply_rows(req, "SELECT v FROM st_counter WHERE name = ?", "s", "hits");
}

static int get_writes(relay_req *req)
{
        return reply_rows(req, "SELECT id FROM st_writes WHERE tenant = ? ORDER BY id", "s", tenant(req));
}

static int get_seen(relay_req *req)
{
        return reply_rows(
                req,
                "SELECT event_id, type, tenant, payload, seq, deliveries FROM st_seen WHERE tenant = ? ORDER BY seq",
                "s", tenant(req));
}

/* Subscriber: records each event once (deduplicated by its id) and counts
 * deliveries, so tests see at-least-once and order. */
static int on_event(relay_plugin *p, const relay_event *ev, void *data)
{
        relay_db *db = relay_plugin_db(p);
        char *payload = json_dumps(ev->payload, JSON_COMPACT | JSON_SORT_KEYS);
        int rc = relay_db_exec(
                db, NULL,
                "INSERT INTO st_seen (event_id, type, tenant, payload, seq, deliveries) VALUES (?, ?, ?, ?, ?, 1) "
                "ON CONFLICT (event_id) DO UPDATE SET deliveries = st_seen.deliveries + 1",
                "ssssi", ev->id, ev->type, ev->tenant, payload ? payload : "{}", ev->seq);
        free(payload);
        return rc == RELAY_DB_OK ? RELAY_OK : RELAY_ERR;
}

/* ------------------------------------------------------------------- jobs */

static int post_jobs(relay_req *req)
{
        json_t *b = relay_json_body(req);
        if (!b)
                return RELAY_OK;
        json_int_t n = json_integer_value(json_object_get(b, "n"));
        if (n > 1000)
                return relay_error(req, 400, "too_many", "n is at most 1000");
        int64_t now = relay_now_ms(), delay = json_integer_value(json_object_get(b, "delay_ms"));
        relay_job_spec spec = {.size = sizeof(spec),
                               .tenant = tenant(req),
                               .kind = json_is_true(json_object_get(b, "batch")) ? "st.batch" : "st.work",
                               .queue = json_string_value(json_object_get(b, "queue")),
                               .target = "test",
                               .payload = b,
                               .run_at_ms = delay <= 0                ? 0
                                            : delay < INT64_MAX - now ? now + delay
                                                                      : INT64_MAX,
                               .max_attempts = (int)json_integer_value(json_object_get(b, "max_attempts"))};
        json_t *ids = json_array();
        relay_db *db = relay_db_of(req);
        for (int i = 0; i < (n > 0 ? n : 1); i++) {
                char id[40];
                int rc = relay_job_enqueue(db, &spec, id);
                if (rc != RELAY_DB_OK) {
                        json_decref(ids);
                        return db_fail(req, rc);
                }
                json_array_append_new(ids, json_string(id));
        }
        return relay_reply_json(req, 201, json_pack("{s:o}", "ids", ids));
}

static int get_jobs(relay_req *req)
{
        relay_db_result *r;
        int rc = relay_job_list(relay_db_of(req), &r, tenant(req), relay_query(req, "state"), relay_query(req, "after"),
                                100);
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        json_t *jobs = json_array();
        while (relay_db_next(r))
                json_array_append_new(jobs,
                                      json_pack("{s:s,s:s,s:s,s:I,s:I,s:I,s:s?}", "id", relay_db_text(r, 0), "kind",
                                                relay_db_text(r, 1), "state", relay_db_text(r, 4), "attempts",
                                                (json_int_t)relay_db_int(r, 5), "max_attempts",
                                                (json_int_t)relay_db_int(r, 6), "next_attempt_at",
                                                (json_int_t)relay_db_int(r, 7), "last_error", relay_db_text(r, 8)));
        relay_db_free(r);
        return relay_reply_json(req, 200, json_pack("{s:o}", "jobs", jobs));
}

static int post_retry(relay_req *req)
{
        int rc = relay_job_retry_now(relay_db_of(req), tenant(req), relay_param(req, "id"));
        if (rc == RELAY_ERR)
                return relay_error(req, 404, "not_found", "no such retryable job");
        if (rc != RELAY_DB_OK)
                return db_fail(req, rc);
        return relay_reply_empty(req, 202);
}

static int get_runs(relay_req *req)
{
        return reply_rows(req,
                          "SELECT job_id, attempt, started_ms, finished_ms, overlap FROM st_runs WHERE job_id = ? "
                          "ORDER BY attempt, started_ms",
                          "s", relay_query(req, "job") ? relay_query(req, "job") : "");
}

typedef struct run {
        relay_job *job;
        int64_t sleep_ms;
        int ok;
        char error[64];
        int64_t retry_after;
        char id[40];
        int attempt;
} run;

/* Job ids running on this daemon right now (control thread only). */
static char running_ids[64][40];

static bool mark_running(const char *id, bool on)
{
        for (int i = 0; i < 64; i++) {
                if (on && !running_ids[i][0]) {
                        snprintf(running_ids[i], sizeof(running_ids[i]), "%s", id);
                        return true;
                }
                if (!on && strcmp(running_ids[i], id) == 0) {
                        running_ids[i][0] = '\0';
                        return true;
                }
        }
        return false;
}

static bool is_running(const char *id)
{
        for (int i = 0; i < 64; i++)
                if (strcmp(running_ids[i], id) == 0)
                        return true;
        return false;
}

static void sleep_work(void *data)
{
        run *r = data;
        usleep((useconds_t)r->sleep_ms * 1000);
}

static void job_finished(relay_plugin *p, void *data)
{
        run *r = data;
        relay_db_exec(relay_plugin_db(p), NULL, "UPDATE st_runs SET finished_ms = ? WHERE job_id = ? AND attempt = ?",
                      "isi", relay_now_ms(), r->id, (int64_t)r->attempt);
        mark_running(r->id, false);
        relay_job_done(r->job, r->ok, r->ok ? NULL : r->error, r->retry_after);
        free(r);
}

static void run_job(relay_plugin *p, relay_job *job, void *data)
{
        json_t *pl = relay_job_payload(job);
        run *r = calloc(1, sizeof(*r));
        r->job = job;
        snprintf(r->id, sizeof(r->id), "%s", relay_job_id(job));
        r->attempt = relay_job_attempt(job);
        r->sleep_ms = json_integer_value(json_object_get(pl, "sleep_ms"));
        int fail_times = (int)json_integer_value(json_object_get(pl, "fail_times"));
        r->ok = r->attempt > fail_times;
        snprintf(r->error, sizeof(r->error), "planned failure %d", r->attempt);
        r->retry_after = json_integer_value(json_object_get(pl, "retry_after_ms"));
        int overlap = is_running(r->id); /* the same job twice at once would be a bug */
        mark_running(r->id, true);
        relay_db_exec(relay_plugin_db(p), NULL,
                      "INSERT INTO st_runs (job_id, attempt, started_ms, overlap) VALUES (?, ?, ?, ?)", "siii", r->id,
                      (int64_t)r->attempt, relay_now_ms(), (int64_t)overlap);
        if (json_is_true(json_object_get(pl, "hang_first")) && r->attempt == 1) {
                mark_running(r->id, false);
                free(r); /* never finishes: its lease must expire */
                return;
        }
        relay_plugin_work(p, sleep_work, job_finished, r);
}

/* st.batch (relay_job_batch): finishes inside its handler.  It records
 * the job in st_writes, then per its payload: "fail" ends it failed (to
 * be retried), "bad_sql" runs a statement that fails after ending it done
 * (PostgreSQL then refuses the rest of the transaction: the job's
 * savepoint must be undone alone), otherwise ends it done. */
static void run_batch_job(relay_plugin *p, relay_job *job, void *data)
{
        relay_db *db = relay_plugin_db(p);
        json_t *pl = relay_job_payload(job);
        char row[64];
        snprintf(row, sizeof(row), "%s/%d", relay_job_id(job), relay_job_attempt(job));
        relay_db_exec(db, NULL, "INSERT INTO st_writes (id, tenant, created_ms) VALUES (?, ?, ?)", "ssi", row,
                      relay_job_tenant(job), relay_now_ms());
        if (json_is_true(json_object_get(pl, "fail"))) {
                relay_job_done(job, 0, "planned failure", 60000);
                return;
        }
        bool bad_sql = json_is_true(json_object_get(pl, "bad_sql"));
        relay_job_done(job, 1, NULL, 0); /* frees the job and its payload */
        if (bad_sql)
                relay_db_exec(db, NULL, "INSERT INTO st_nowhere (x) VALUES (1)", "");
}

/* -------------------------------------------------------------- migrations */

static const relay_migration migrations[] = {
        {1, NULL,
         "CREATE TABLE st_kv (k TEXT PRIMARY KEY, tenant TEXT NOT NULL, i INTEGER, d REAL, s TEXT, b BLOB, j TEXT);",
         "CREATE TABLE st_kv (k TEXT PRIMARY KEY, tenant TEXT NOT NULL, i BIGINT, d DOUBLE PRECISION, s TEXT, b BYTEA, "
         "j TEXT);"},
        {2,
         "CREATE TABLE st_seen (event_id TEXT PRIMARY KEY, type TEXT, tenant TEXT, payload TEXT, seq BIGINT, "
         "deliveries INTEGER);"
         "CREATE TABLE st_runs (job_id TEXT, attempt INTEGER, started_ms BIGINT, finished_ms BIGINT, overlap INTEGER);"
         "CREATE TABLE st_counter (name TEXT PRIMARY KEY, v BIGINT NOT NULL);"
         "CREATE TABLE st_writes (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, created_ms BIGINT NOT NULL);",
         NULL, NULL},
        {0, NULL, NULL, NULL}};

/* The same, plus a third that fails: start-up must stop and leave nothing. */
static const relay_migration failing[] = {
        {1, NULL,
         "CREATE TABLE st_kv (k TEXT PRIMARY KEY, tenant TEXT NOT NULL, i INTEGER, d REAL, s TEXT, b BLOB, j TEXT);",
         "CREATE TABLE st_kv (k TEXT PRIMARY KEY, tenant TEXT NOT NULL, i BIGINT, d DOUBLE PRECISION, s TEXT, b BYTEA, "
         "j TEXT);"},
        {2, "CREATE TABLE st_other (x INTEGER)", NULL, NULL},
        {3, "CREATE TABLE st_broken (x INTEGER); INSERT INTO st_nowhere VALUES (1)", NULL, NULL},
        {0, NULL, NULL, NULL}};

static int init(relay_plugin *p)
{
        relay_conf_declare(p, "fail_migration", RELAY_CONF_BOOL, "false", "register a migration that fails");
        relay_conf_declare(p, "job_concurrency", RELAY_CONF_INT, "4", "jobs run at once");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_migrations(p, relay_conf_bool(p, "fail_migration") ? failing : migrations) ||
            relay_event_subscribe(p, "seen", "st.*", on_event, NULL) ||
            relay_job_handler(p, "st.work", (int)relay_conf_int(p, "job_concurrency"), run_job, NULL) ||
            relay_job_handler(p, "st.batch", 16, run_batch_job, NULL) || relay_job_batch(p, "st.batch") ||
            relay_job_batch(p, "st.none") != RELAY_ERR /* no such handler: refused */)
                return RELAY_ERR;
        struct {
                const char *m, *path;
                relay_handler h;
        } routes[] = {{"POST", "/store/kv", post_kv},
                      {"GET", "/store/kv/:k", get_kv},
                      {"POST", "/store/tx", post_tx},
                      {"POST", "/store/write", post_write},
                      {"GET", "/store/writes", get_writes},
                      {"POST", "/store/counter", post_counter},
                      {"GET", "/store/counter", get_counter},
                      {"GET", "/store/seen", get_seen},
                      {"POST", "/store/jobs", post_jobs},
                      {"GET", "/store/jobs", get_jobs},
                      {"POST", "/store/jobs/:id/retry", post_retry},
                      {"GET", "/store/runs", get_runs}};
        for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
                if (relay_route(p, routes[i].m, routes[i].path, routes[i].h, RELAY_AUTH_PUBLIC) != RELAY_OK)
                        return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(storetest, .version = "0.1.0", .description = "test plugin: storage, outbox, jobs", .init = init);
