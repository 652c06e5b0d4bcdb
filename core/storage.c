/* storage.c - relay/db.h over a loadable driver.  The driver runs single
 * statements; this file owns connections (one per thread, lazily opened,
 * reopened with exponential backoff after a loss), transactions (nesting as
 * savepoints), parameter typing and error classes. */
#include <errno.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <ltdl.h>
#include "daemon.h"
#include "db_result.h"
#include "events_internal.h"
#include "http.h"
#include "log.h"
#include "module.h"
#include "settings.h"
#include "json_write.h"
#include "storage.h"
#include "worker.h"

#define MAX_PARAMS 64
#define BACKOFF_START_MS 100
#define BACKOFF_MAX_MS 5000

static struct {
        lt_dlhandle handle;
        const relay_storage_driver *drv;
        relay_driver_config cfg;
        char *path, *dsn, *synchronous;
        relay_db *control;
        uv_thread_t control_thread;
} st;

static const char *check_driver_name(const char *v)
{
        for (const char *c = v; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
                        return "expected a driver name such as sqlite or pgsql";
        return *v ? NULL : "expected a driver name such as sqlite or pgsql";
}

static const char *check_synchronous(const char *v)
{
        return strcmp(v, "off") && strcmp(v, "normal") && strcmp(v, "full") ? "expected off, normal or full" : NULL;
}

static const conf_key_def storage_keys[] = {
        {"storage", "driver", RELAY_CONF_STRING, "sqlite", check_driver_name, "sqlite or pgsql"},
        {"storage", "path", RELAY_CONF_STRING, "", NULL, "sqlite: database file (default DATA_DIR/relay.db)"},
        {"storage", "dsn", RELAY_CONF_STRING, "", NULL, "pgsql: libpq connection string"},
        {"storage", "busy_timeout", RELAY_CONF_DURATION, "5s", NULL, "sqlite: wait for locks this long"},
        {"storage", "synchronous", RELAY_CONF_STRING, "normal", check_synchronous, "sqlite: off, normal, full"},
        {"storage", "connect_timeout", RELAY_CONF_DURATION, "5s", NULL, "pgsql: connection timeout"},
        {"storage", "statement_cache", RELAY_CONF_INT, "128", NULL, "prepared statements kept per connection"},
        {"events", "poll_interval", RELAY_CONF_DURATION, "250ms", NULL,
         "how often to look for events from other processes"},
        {"events", "retry_delay", RELAY_CONF_DURATION, "5s", NULL, "wait before redelivering a refused event"},
        {"events", "batch", RELAY_CONF_INT, "200", NULL, "events read per subscriber per pass"},
        {"jobs", "poll_interval", RELAY_CONF_DURATION, "1s", NULL, "how often to look for due jobs"},
        {"jobs", "lease", RELAY_CONF_DURATION, "60s", NULL, "a claimed job is reclaimed after this"},
        {"jobs", "max_attempts", RELAY_CONF_INT, "8", NULL, "default attempts before dead-lettering"},
        {"jobs", "backoff_base", RELAY_CONF_DURATION, "1s", NULL, "first retry delay (doubles, with jitter)"},
        {"jobs", "backoff_max", RELAY_CONF_DURATION, "1h", NULL, "longest retry delay"},
        {"jobs", "timeout", RELAY_CONF_DURATION, "1h", NULL, "a job running longer is given up and retried"},
        {"jobs", "keep_done", RELAY_CONF_DURATION, "7d", NULL, "finished jobs are deleted after this"},
};

int storage_declare(conf *c, const char *driver_dir)
{
        if (conf_declare_table(c, storage_keys, sizeof(storage_keys) / sizeof(storage_keys[0])) != 0)
                return -1;
        return conf_declare(c, "storage", "dir", RELAY_CONF_STRING, driver_dir, "folder of storage driver modules",
                            NULL);
}

/* --------------------------------------------------------------- the driver */

static int load_driver(const char *dir, const char *name, char *err, size_t err_len)
{
        st.handle = module_open(dir, name);
        if (!st.handle) {
                snprintf(err, err_len, "storage driver '%s' not found in %s: %s", name, dir, lt_dlerror());
                return -1;
        }
        const relay_storage_driver *d = lt_dlsym(st.handle, "relay_storage_driver");
        if (!d || d->magic != RELAY_DRIVER_MAGIC) {
                snprintf(err, err_len, "%s/%s is not a Relay storage driver", dir, name);
                return -1;
        }
        if (d->abi_major != RELAY_SDK_ABI_MAJOR || d->abi_minor > RELAY_SDK_ABI_MINOR ||
            d->size < offsetof(relay_storage_driver, reserved)) {
                snprintf(err, err_len,
                         "storage driver '%s' was built for Relay SDK ABI %u.%u; this relay-server provides ABI %d.%d",
                         name, d->abi_major, d->abi_minor, RELAY_SDK_ABI_MAJOR, RELAY_SDK_ABI_MINOR);
                return -1;
        }
        st.drv = d;
        return 0;
}

/* SQLite's file goes in data_dir unless a path is given; the folder is made. */
static char *sqlite_path(const conf *c, bool create_dir)
{
        const char *path = conf_get(c, "storage", "path");
        if (path && *path)
                return strdup(path);
        const char *dir = conf_get(c, "server", "data_dir");
        if (create_dir)
                mkdir(dir, 0750); /* may exist; open reports what matters */
        size_t n = strlen(dir) + 12;
        char *p = malloc(n);
        if (p)
                snprintf(p, n, "%s/relay.db", dir);
        return p;
}

int storage_open(bool check_only, char *err, size_t err_len)
{
        conf *c = conf_current();
        if (load_driver(conf_get(c, "storage", "dir"), conf_get(c, "storage", "driver"), err, err_len) != 0)
                return -1;
        st.path = sqlite_path(c, !check_only); /* -t changes nothing on disk */
        st.dsn = strdup(conf_get(c, "storage", "dsn"));
        st.synchronous = strdup(conf_get(c, "storage", "synchronous"));
        st.cfg = (relay_driver_config){.size = sizeof(st.cfg),
                                       .path = st.path,
                                       .dsn = st.dsn,
                                       .busy_timeout_ms = conf_get_duration_ms(c, "storage", "busy_timeout"),
                                       .synchronous = st.synchronous,
                                       .connect_timeout_ms = conf_get_duration_ms(c, "storage", "connect_timeout"),
                                       .statement_cache = (int)conf_get_int(c, "storage", "statement_cache")};
        if (check_only)
                return 0;
        st.control_thread = uv_thread_self();
        st.control = storage_db_new();
        if (!st.control)
                return snprintf(err, err_len, "out of memory"), -1;
        st.control->conn = st.drv->open(&st.cfg, st.control->err, sizeof(st.control->err));
        if (!st.control->conn) {
                snprintf(err, err_len, "storage (%s): %s", st.drv->name, st.control->err);
                return -1;
        }
        log_info("storage: %s", st.drv->name);
        return 0;
}

void storage_close(void)
{
        storage_db_free(st.control);
        st.control = NULL;
        if (st.handle)
                lt_dlclose(st.handle);
        free(st.path), free(st.dsn), free(st.synchronous);
        memset(&st, 0, sizeof(st));
}

relay_db *storage_db_new(void)
{
        relay_db *db = calloc(1, sizeof(*db));
        if (db)
                db->drv = st.drv;
        return db;
}

void storage_db_free(relay_db *db)
{
        if (!db)
                return;
        if (db->conn)
                db->drv->close(db->conn);
        free(db);
}

relay_db *storage_control_db(void) { return st.control; }

/* ---------------------------------------------------------- connections */

static uint64_t now_ms(void) { return uv_hrtime() / 1000000; }

/* SQLite has one writer at a time.  The threads of this daemon queue for
 * it on a mutex, taken at the outermost BEGIN and given back when the
 * transaction ends, instead of on SQLite's busy handler, which polls with
 * sleeps of 1 to 100 ms: with two workers and group commit, the sleeping
 * left the CPU idle while requests waited.  Other processes on the same
 * file still meet the busy timeout. */
static pthread_mutex_t sqlite_writer = PTHREAD_MUTEX_INITIALIZER;

static void writer_enter(relay_db *db)
{
        if (db->writer_held || strcmp(db->drv->dialect, "sqlite") != 0)
                return;
        pthread_mutex_lock(&sqlite_writer);
        db->writer_held = true;
}

static void writer_leave(relay_db *db)
{
        if (!db->writer_held)
                return;
        db->writer_held = false;
        pthread_mutex_unlock(&sqlite_writer);
}

/* Does SQL change data (its first word: INSERT, UPDATE, DELETE, REPLACE,
 * or WITH, which may lead to one)?  Enough to queue lone writes on the
 * SQLite writer mutex; a wrong "no" only costs a busy wait, as before. */
static bool writes(const char *sql)
{
        static const char *const verbs[] = {"INSERT", "UPDATE", "DELETE", "REPLACE", "WITH", NULL};
        while (*sql == ' ' || *sql == '\n' || *sql == '\t')
                sql++;
        for (int i = 0; verbs[i]; i++)
                if (strncasecmp(sql, verbs[i], strlen(verbs[i])) == 0)
                        return true;
        return false;
}

/* The connection was lost (or never made): no new attempt before the
 * backoff has passed, so a dead database costs nothing per request. */
static int mark_down(relay_db *db)
{
        db->down = true;
        db->depth = 0;
        writer_leave(db);
        db->emitted = db->enqueued = db->outbox_locked = false;
        db->backoff_ms = db->backoff_ms ? db->backoff_ms * 2 : BACKOFF_START_MS;
        if (db->backoff_ms > BACKOFF_MAX_MS)
                db->backoff_ms = BACKOFF_MAX_MS;
        db->down_until_ms = now_ms() + db->backoff_ms;
        return RELAY_DB_UNAVAILABLE;
}

static int ensure_connected(relay_db *db)
{
        if (!db || !db->drv)
                return RELAY_DB_UNAVAILABLE;
        if (db->conn && !db->down)
                return RELAY_DB_OK;
        if (db->down && now_ms() < db->down_until_ms) {
                snprintf(db->err, sizeof(db->err), "database unavailable (retrying)");
                return RELAY_DB_UNAVAILABLE;
        }
        if (!db->conn)
                db->conn = db->drv->open(&st.cfg, db->err, sizeof(db->err));
        else if (db->drv->reconnect && db->drv->reconnect(db->conn, db->err, sizeof(db->err)) != RELAY_DB_OK) {
                log_warn("storage: reconnect failed: %s", db->err);
                return mark_down(db);
        }
        if (!db->conn) {
                log_warn("storage: cannot connect: %s", db->err);
                return mark_down(db);
        }
        if (db->down)
                log_info("storage: connection restored");
        db->down = false;
        db->backoff_ms = 0;
        return RELAY_DB_OK;
}

/* -------------------------------------------------------------- statements */

typedef struct params {
        relay_db_param p[MAX_PARAMS];
        char *owned[MAX_PARAMS]; /* JSON texts to free */
        size_t n, n_owned;
} params;

static int bind_params(relay_db *db, params *ps, const char *types, va_list ap)
{
        for (const char *t = types ? types : ""; *t; t++) {
                if (ps->n == MAX_PARAMS) {
                        snprintf(db->err, sizeof(db->err), "more than %d parameters", MAX_PARAMS);
                        return RELAY_DB_ERROR;
                }
                relay_db_param *p = &ps->p[ps->n++];
                memset(p, 0, sizeof(*p));
                switch (*t) {
                case 'i': p->type = 'i', p->i = va_arg(ap, int64_t); break;
                case 'd': p->type = 'd', p->d = va_arg(ap, double); break;
                case 'n': p->type = 'n'; break;
                case 's':
                        p->s = va_arg(ap, const char *);
                        p->type = p->s ? 's' : 'n';
                        p->len = p->s ? strlen(p->s) : 0;
                        break;
                case 'b':
                        p->type = 'b';
                        p->s = va_arg(ap, const void *);
                        p->len = va_arg(ap, size_t);
                        break;
                case 'j': {
                        json_t *j = va_arg(ap, json_t *);
                        buf text = {0}; /* json_dumps's bytes, in one pass (json_write.c) */
                        bool ok = j && buf_reserve(&text, 256) == 0 && json_write(&text, j) == 0 &&
                                  buf_terminate(&text) == 0;
                        if (!ok)
                                buf_free(&text);
                        p->type = ok ? 's' : 'n';
                        p->s = text.data;
                        p->len = text.len;
                        if (ok)
                                ps->owned[ps->n_owned++] = text.data;
                        break;
                }
                default: snprintf(db->err, sizeof(db->err), "unknown parameter type '%c'", *t); return RELAY_DB_ERROR;
                }
        }
        return RELAY_DB_OK;
}

static int run(relay_db *db, relay_db_result **out, const char *sql, const relay_db_param *p, size_t n)
{
        if (out)
                *out = NULL;
        int rc = ensure_connected(db);
        if (rc != RELAY_DB_OK)
                return rc;
        relay_db_result *res = db_result_new();
        if (!res)
                return RELAY_DB_ERROR;
        rc = db->drv->exec(db->conn, sql, p, n, res, db->err, sizeof(db->err));
        if (rc == RELAY_DB_UNAVAILABLE) {
                log_warn("storage: connection lost: %s", db->err);
                mark_down(db);
        }
        if (rc == RELAY_DB_OK && out)
                *out = res;
        else
                relay_db_free(res);
        return rc;
}

RELAY_API int relay_db_vquery(relay_db *db, relay_db_result **out, const char *sql, const char *types, va_list ap)
{
        if (out)
                *out = NULL;
        if (!db)
                return RELAY_DB_UNAVAILABLE;
        params ps;
        ps.n = ps.n_owned = 0;
        int rc = bind_params(db, &ps, types, ap);
        /* a write outside a transaction queues for SQLite like a BEGIN does */
        bool lone_write = rc == RELAY_DB_OK && db->depth == 0 && writes(sql);
        if (lone_write)
                writer_enter(db);
        if (rc == RELAY_DB_OK)
                rc = run(db, out, sql, ps.p, ps.n);
        if (lone_write)
                writer_leave(db);
        for (size_t i = 0; i < ps.n_owned; i++)
                free(ps.owned[i]);
        return rc;
}

RELAY_API int relay_db_query(relay_db *db, relay_db_result **out, const char *sql, const char *types, ...)
{
        va_list ap;
        va_start(ap, types);
        int rc = relay_db_vquery(db, out, sql, types, ap);
        va_end(ap);
        return rc;
}

RELAY_API int relay_db_exec(relay_db *db, int64_t *changes, const char *sql, const char *types, ...)
{
        relay_db_result *r = NULL;
        va_list ap;
        va_start(ap, types);
        int rc = relay_db_vquery(db, &r, sql, types, ap);
        va_end(ap);
        if (changes)
                *changes = rc == RELAY_DB_OK ? relay_db_changes(r) : 0;
        relay_db_free(r);
        return rc;
}

int storage_script(relay_db *db, const char *sql)
{
        int rc = ensure_connected(db);
        if (rc != RELAY_DB_OK)
                return rc;
        /* No parameters and no result: the driver may run several statements. */
        rc = db->drv->exec(db->conn, sql, NULL, 0, NULL, db->err, sizeof(db->err));
        if (rc == RELAY_DB_UNAVAILABLE)
                mark_down(db);
        return rc;
}

/* ----------------------------------------------------------- transactions */

RELAY_API int relay_db_begin(relay_db *db)
{
        if (!db)
                return RELAY_DB_UNAVAILABLE;
        char sql[48];
        if (db->depth == 0)
                /* IMMEDIATE: take SQLite's write lock now, so two writers wait on
                 * the busy timeout instead of failing on a lock upgrade. */
                snprintf(sql, sizeof(sql), "%s", strcmp(db->drv->dialect, "sqlite") == 0 ? "BEGIN IMMEDIATE" : "BEGIN");
        else
                snprintf(sql, sizeof(sql), "SAVEPOINT relay_sp%d", db->depth);
        if (db->depth == 0)
                writer_enter(db);
        int rc = run(db, NULL, sql, NULL, 0);
        if (rc != RELAY_DB_OK && db->depth == 0)
                writer_leave(db);
        if (rc == RELAY_DB_OK) {
                if (db->depth == 0)
                        db->emitted = db->enqueued = db->outbox_locked = false, db->savepoints = 0;
                else
                        db->savepoints++;
                db->depth++;
        }
        return rc;
}

/* 64 subtransactions, less a margin for the savepoints one more unit of
 * work may open inside its own (a change's, a subscriber's). */
#define SUBTRANSACTIONS_PER_TX 56

bool storage_tx_full(relay_db *db)
{
        return db && db->depth > 0 && db->drv && strcmp(db->drv->dialect, "pgsql") == 0 &&
               db->savepoints >= SUBTRANSACTIONS_PER_TX;
}

static void after_commit(relay_db *db)
{
        if (db->emitted)
                events_kick();
        if (db->enqueued)
                jobs_kick();
        db->emitted = db->enqueued = db->outbox_locked = false;
}

RELAY_API int relay_db_commit(relay_db *db)
{
        if (!db || db->depth == 0) {
                if (db)
                        snprintf(db->err, sizeof(db->err), "commit without a transaction");
                return RELAY_DB_ERROR;
        }
        char sql[48];
        if (db->depth == 1)
                snprintf(sql, sizeof(sql), "COMMIT");
        else
                snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT relay_sp%d", db->depth - 1);
        int rc = run(db, NULL, sql, NULL, 0);
        if (rc == RELAY_DB_OK) {
                if (--db->depth == 0) {
                        writer_leave(db);
                        after_commit(db);
                }
                return rc;
        }
        if (db->depth == 1 && db->conn && !db->down) { /* a failed COMMIT: make sure nothing stays open */
                char keep[sizeof(db->err)];
                memcpy(keep, db->err, sizeof(keep));
                run(db, NULL, "ROLLBACK", NULL, 0);
                memcpy(db->err, keep, sizeof(keep));
                db->depth = 0;
                db->emitted = db->enqueued = db->outbox_locked = false;
                writer_leave(db);
        }
        return rc;
}

RELAY_API int relay_db_rollback(relay_db *db)
{
        if (!db || db->depth == 0)
                return RELAY_DB_ERROR;
        int rc;
        if (db->depth == 1) {
                rc = run(db, NULL, "ROLLBACK", NULL, 0);
                db->emitted = db->enqueued = db->outbox_locked = false;
        } else {
                char sql[96];
                snprintf(sql, sizeof(sql), "ROLLBACK TO SAVEPOINT relay_sp%d", db->depth - 1);
                db->outbox_locked = false; /* it may have been taken, and released, in there */
                rc = run(db, NULL, sql, NULL, 0);
                snprintf(sql, sizeof(sql), "RELEASE SAVEPOINT relay_sp%d", db->depth - 1);
                if (rc == RELAY_DB_OK)
                        rc = run(db, NULL, sql, NULL, 0);
        }
        if (db->depth > 0 && --db->depth == 0)
                writer_leave(db);
        return rc;
}

RELAY_API int relay_db_in_transaction(relay_db *db) { return db && db->depth > 0; }

RELAY_API const char *relay_db_dialect(relay_db *db)
{
        return db && db->drv ? db->drv->dialect : st.drv ? st.drv->dialect : "none";
}

RELAY_API const char *relay_db_errmsg(relay_db *db) { return db ? db->err : "no storage"; }

void storage_request_end(relay_db *db, const char *request_id)
{
        if (!db || db->depth == 0)
                return;
        log_write(RELAY_LOG_ERROR, "storage", request_id, "a handler left a transaction open: rolled back");
        while (db->depth > 0)
                relay_db_rollback(db);
}

void storage_idle(relay_db *db)
{
        if (db && db->conn && !db->down && db->depth == 0 && db->drv->idle)
                db->drv->idle(db->conn);
}

/* ------------------------------------------------------------ for plugins */

RELAY_API relay_db *relay_db_of(relay_req *req)
{
        worker *w = req->w;
        if (!w->db && st.drv)
                w->db = storage_db_new();
        return w->db;
}

RELAY_API relay_db *relay_plugin_db(relay_plugin *p)
{
        /* One connection, one thread: a handler must use relay_db_of(req). */
        uv_thread_t self = uv_thread_self();
        if (st.control && !uv_thread_equal(&self, &st.control_thread)) {
                log_write(RELAY_LOG_ERROR, relay_plugin_name(p), NULL,
                          "relay_plugin_db() called off the control thread; use relay_db_of(req) in handlers");
                return NULL;
        }
        return st.control;
}

RELAY_API int relay_db_reply_error(relay_req *req, int status)
{
        relay_db *db = req->w->db;
        switch (status) {
        case RELAY_DB_CONSTRAINT: return relay_error(req, 409, "conflict", "the change conflicts with existing data");
        case RELAY_DB_BUSY:
                relay_set_header(req, "Retry-After", "1");
                return relay_error(req, 503, "busy", "the database is busy; retry");
        case RELAY_DB_UNAVAILABLE:
                relay_set_header(req, "Retry-After", "2");
                return relay_error(req, 503, "unavailable", "storage is unavailable; retry shortly");
        default:
                relay_req_log(req, RELAY_LOG_ERROR, "storage error: %s", db ? db->err : "no connection");
                return relay_error(req, 500, "internal", "internal error");
        }
}
