/* sqlite.c - the SQLite storage driver: one connection per thread, WAL,
 * a busy timeout, foreign keys on, prepared statements cached per
 * connection.
 *
 * Shared reads.  A lone SELECT in autocommit mode starts and ends a read
 * transaction of its own: fcntl locks on the WAL index and an fstat, a
 * fifth of a GET /v1/records/:id.  Once the core has called idle() on a
 * connection (a worker does, before its loop waits for I/O), the reads
 * between two idle() calls share one read transaction instead.  A reader
 * must still see every write that was answered before its request
 * arrived, whatever connection made it: every commit in this process
 * bumps commit_gen, and a shared transaction older than the last commit
 * is ended before the next read.  Anything but a plain read (a write,
 * BEGIN, a script) ends it first, so the core's transactions never meet
 * it.  Commits of other processes on the file (relayctl) are seen at the
 * next idle(), as events from them are seen at the next poll. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sqlite3.h>
#include <relay/driver.h>

struct relay_driver_conn {
        sqlite3 *db;
        relay_map *stmts; /* SQL text -> sqlite3_stmt */
        int cache_max;
        bool share_reads;    /* idle() has been called: reads may share a transaction */
        bool shared_open;    /* the shared read transaction is open */
        uint64_t shared_gen; /* commit_gen when it began */
};

/* Commits made by this process's connections (atomic). */
static uint64_t commit_gen;

static int status_of(int rc)
{
        switch (rc & 0xff) {
        case SQLITE_OK:
        case SQLITE_ROW:
        case SQLITE_DONE: return RELAY_DB_OK;
        case SQLITE_CONSTRAINT: return RELAY_DB_CONSTRAINT;
        case SQLITE_BUSY:
        case SQLITE_LOCKED: return RELAY_DB_BUSY;
        case SQLITE_CANTOPEN:
        case SQLITE_NOTADB:
        case SQLITE_CORRUPT:
        case SQLITE_FULL:
        case SQLITE_IOERR: return RELAY_DB_UNAVAILABLE;
        default: return RELAY_DB_ERROR;
        }
}

static int fail(sqlite3 *db, int rc, char *err, size_t len)
{
        snprintf(err, len, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        return status_of(rc);
}

static void finalize(void *stmt) { sqlite3_finalize(stmt); }

static void conn_close(relay_driver_conn *c)
{
        if (!c)
                return;
        relay_map_free(c->stmts, finalize);
        sqlite3_close_v2(c->db);
        free(c);
}

static relay_driver_conn *conn_open(const relay_driver_config *cfg, char *err, size_t len)
{
        relay_driver_conn *c = calloc(1, sizeof(*c));
        if (!c || !(c->stmts = relay_map_new())) {
                free(c);
                snprintf(err, len, "out of memory");
                return NULL;
        }
        c->cache_max = cfg->statement_cache > 0 ? cfg->statement_cache : 0;
        int rc = sqlite3_open_v2(cfg->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 NULL);
        if (rc != SQLITE_OK) {
                snprintf(err, len, "cannot open %s: %s", cfg->path, c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
                conn_close(c);
                return NULL;
        }
        sqlite3_busy_timeout(c->db, (int)cfg->busy_timeout_ms);
        char pragmas[256];
        snprintf(pragmas, sizeof(pragmas),
                 "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = %s;"
                 " PRAGMA temp_store = MEMORY;",
                 cfg->synchronous && *cfg->synchronous ? cfg->synchronous : "NORMAL");
        char *msg = NULL;
        /* Switching to WAL needs a moment of exclusive access and does not
         * wait on the busy handler: retry while another process holds it. */
        int rc2;
        for (uint64_t waited = 0;; waited += 10) {
                rc2 = sqlite3_exec(c->db, pragmas, NULL, NULL, &msg);
                if ((rc2 & 0xff) != SQLITE_BUSY || waited >= cfg->busy_timeout_ms)
                        break;
                sqlite3_free(msg);
                msg = NULL;
                sqlite3_sleep(10);
        }
        if (rc2 != SQLITE_OK) {
                snprintf(err, len, "cannot set up %s: %s", cfg->path, msg ? msg : "?");
                sqlite3_free(msg);
                conn_close(c);
                return NULL;
        }
        return c;
}

static int bind(sqlite3_stmt *s, const relay_db_param *p, size_t n)
{
        if ((int)n != sqlite3_bind_parameter_count(s))
                return SQLITE_RANGE;
        for (size_t i = 0; i < n; i++) {
                int at = (int)i + 1, rc;
                switch (p[i].type) {
                case 'i': rc = sqlite3_bind_int64(s, at, p[i].i); break;
                case 'd': rc = sqlite3_bind_double(s, at, p[i].d); break;
                case 's': rc = sqlite3_bind_text(s, at, p[i].s, (int)p[i].len, SQLITE_STATIC); break;
                case 'b': rc = sqlite3_bind_blob(s, at, p[i].s, (int)p[i].len, SQLITE_STATIC); break;
                default: rc = sqlite3_bind_null(s, at); break;
                }
                if (rc != SQLITE_OK)
                        return rc;
        }
        return SQLITE_OK;
}

static int read_row(sqlite3_stmt *s, relay_db_result *out)
{
        int cols = sqlite3_column_count(s);
        if (relay_dbres_row(out) != RELAY_OK)
                return SQLITE_NOMEM;
        for (int c = 0; c < cols; c++) {
                switch (sqlite3_column_type(s, c)) {
                case SQLITE_INTEGER: relay_dbres_int(out, (size_t)c, sqlite3_column_int64(s, c)); break;
                case SQLITE_FLOAT: relay_dbres_double(out, (size_t)c, sqlite3_column_double(s, c)); break;
                case SQLITE_TEXT:
                        relay_dbres_text(out, (size_t)c, (const char *)sqlite3_column_text(s, c),
                                         (size_t)sqlite3_column_bytes(s, c));
                        break;
                case SQLITE_BLOB:
                        relay_dbres_blob(out, (size_t)c, sqlite3_column_blob(s, c), (size_t)sqlite3_column_bytes(s, c));
                        break;
                default: relay_dbres_null(out, (size_t)c); break;
                }
        }
        return SQLITE_OK;
}

/* ------------------------------------------------------------ shared reads */

/* A plain read: a SELECT (or WITH/VALUES) that writes nothing.  BEGIN,
 * COMMIT and SAVEPOINT count as read-only to SQLite, hence the first word. */
static bool plain_read(sqlite3_stmt *s, const char *sql)
{
        if (!sqlite3_stmt_readonly(s))
                return false;
        while (*sql == ' ' || *sql == '\n' || *sql == '\t' || *sql == '(')
                sql++;
        return strncasecmp(sql, "SELECT", 6) == 0 || strncasecmp(sql, "WITH", 4) == 0 ||
               strncasecmp(sql, "VALUES", 6) == 0;
}

static void shared_end(relay_driver_conn *c)
{
        if (!c->shared_open)
                return;
        c->shared_open = false;
        /* a read transaction: COMMIT writes nothing; should it fail, ROLLBACK */
        if (sqlite3_exec(c->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
                sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
}

/* Before statement S runs: end a shared transaction it must not run in,
 * and open one for a plain read outside any transaction. */
static void shared_before(relay_driver_conn *c, bool read)
{
        uint64_t gen = __atomic_load_n(&commit_gen, __ATOMIC_ACQUIRE);
        if (c->shared_open && (!read || gen != c->shared_gen))
                shared_end(c);
        if (read && c->share_reads && !c->shared_open && sqlite3_get_autocommit(c->db) &&
            sqlite3_exec(c->db, "BEGIN DEFERRED", NULL, NULL, NULL) == SQLITE_OK) {
                c->shared_open = true;
                c->shared_gen = gen;
        }
}

/* After anything but a plain read: back in autocommit mode means a
 * transaction (or a lone write) just ended: readers must look again. */
static void shared_after(relay_driver_conn *c)
{
        if (sqlite3_get_autocommit(c->db))
                __atomic_add_fetch(&commit_gen, 1, __ATOMIC_RELEASE);
}

/* The core's worker calls this before its loop waits: the reads of the
 * next turn start from a fresh snapshot, and an idle worker holds none
 * (an open read transaction would keep checkpoints from recycling the WAL). */
static void conn_idle(relay_driver_conn *c)
{
        c->share_reads = true;
        shared_end(c);
}

/* The cached statement for SQL, or a new one (cached while there is room). */
static sqlite3_stmt *statement(relay_driver_conn *c, const char *sql, int *cached, int *rc)
{
        sqlite3_stmt *s = relay_map_get(c->stmts, sql);
        *cached = s != NULL;
        if (s)
                return s;
        const char *tail = NULL;
        *rc = sqlite3_prepare_v3(c->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s, &tail);
        if (*rc != SQLITE_OK)
                return NULL;
        while (tail && (*tail == ' ' || *tail == '\n' || *tail == '\t' || *tail == ';'))
                tail++;
        if (tail && *tail) {
                sqlite3_finalize(s);
                *rc = SQLITE_MISUSE;
                return NULL;
        }
        if ((int)relay_map_count(c->stmts) < c->cache_max) {
                relay_map_put(c->stmts, sql, s);
                *cached = 1;
        }
        return s;
}

static int conn_exec(relay_driver_conn *c, const char *sql, const relay_db_param *params, size_t n,
                     relay_db_result *out, char *err, size_t len)
{
        if (!params && !out) { /* a script: several statements, no parameters */
                char *msg = NULL;
                shared_end(c);
                int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
                shared_after(c);
                if (rc != SQLITE_OK)
                        snprintf(err, len, "%s", msg ? msg : sqlite3_errstr(rc));
                sqlite3_free(msg);
                return status_of(rc);
        }
        int cached = 0, rc = SQLITE_OK;
        sqlite3_stmt *s = statement(c, sql, &cached, &rc);
        if (!s) {
                if (rc == SQLITE_MISUSE)
                        return snprintf(err, len, "one statement per call"), RELAY_DB_ERROR;
                return fail(c->db, rc, err, len);
        }
        bool read = plain_read(s, sql);
        shared_before(c, read);
        rc = bind(s, params, n);
        if (rc == SQLITE_RANGE) {
                snprintf(err, len, "the statement has %d placeholders, %zu values given",
                         sqlite3_bind_parameter_count(s), n);
                rc = SQLITE_ERROR;
        } else if (rc == SQLITE_OK) {
                int cols = sqlite3_column_count(s);
                if (out && cols) {
                        relay_dbres_columns(out, (size_t)cols);
                        for (int i = 0; i < cols; i++)
                                relay_dbres_column_name(out, (size_t)i, sqlite3_column_name(s, i));
                }
                while ((rc = sqlite3_step(s)) == SQLITE_ROW)
                        if (out && read_row(s, out) != SQLITE_OK) {
                                rc = SQLITE_NOMEM;
                                break;
                        }
                if (rc == SQLITE_DONE && out)
                        relay_dbres_changes(out, sqlite3_stmt_readonly(s) ? 0 : sqlite3_changes64(c->db));
        }
        int status = rc == SQLITE_DONE ? RELAY_DB_OK : fail(c->db, rc, err, len);
        if (status == RELAY_DB_OK && rc != SQLITE_DONE)
                status = RELAY_DB_ERROR;
        if (rc != SQLITE_DONE && rc != SQLITE_RANGE && rc != SQLITE_ERROR)
                snprintf(err, len, "%s", sqlite3_errmsg(c->db));
        if (cached) {
                sqlite3_reset(s);
                sqlite3_clear_bindings(s);
        } else {
                sqlite3_finalize(s);
        }
        if (!read)
                shared_after(c);
        else if (status != RELAY_DB_OK)
                shared_end(c); /* a failed read: the next one starts afresh */
        return status;
}

RELAY_STORAGE_DRIVER(sqlite, .dialect = "sqlite", .open = conn_open, .close = conn_close, .exec = conn_exec,
                     .idle = conn_idle);
