/* sqlite.c - the SQLite storage driver: one connection per thread, WAL,
 * a busy timeout, foreign keys on, prepared statements cached per
 * connection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <relay/driver.h>

struct relay_driver_conn {
        sqlite3 *db;
        relay_map *stmts; /* SQL text -> sqlite3_stmt */
        int cache_max;
};

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
                int rc = sqlite3_exec(c->db, sql, NULL, NULL, &msg);
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
        return status;
}

RELAY_STORAGE_DRIVER(sqlite, .dialect = "sqlite", .open = conn_open, .close = conn_close, .exec = conn_exec);
