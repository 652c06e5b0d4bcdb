/* relay/db.h - storage: one API over SQLite and PostgreSQL.
 *
 * Every worker thread (and the control thread) has its own connection; a
 * handler gets its worker's with relay_db_of(req).  SQL is portable: `?`
 * placeholders (the PostgreSQL driver numbers them), ON CONFLICT and
 * RETURNING work on both engines; where the dialects differ, ask
 * relay_db_dialect() or give per-dialect migrations.
 *
 * Parameters are typed by a format string, one letter per `?`:
 *   i int64_t   d double   s const char * (NULL: SQL NULL)   n SQL NULL
 *   b const void *, size_t (blob)   j json_t * (stored as JSON text)
 *
 *   relay_db_result *r;
 *   int rc = relay_db_query(db, &r, "SELECT body FROM records WHERE tenant = ? AND id = ?",
 *                           "ss", tenant, id);
 *   if (rc != RELAY_DB_OK)
 *           return relay_db_reply_error(req, rc);
 *   if (relay_db_next(r)) ... relay_db_text(r, 0) ...
 *   relay_db_free(r);
 *
 * Results are read in full before the call returns: keep lists paginated. */
#ifndef RELAY_DB_H
#define RELAY_DB_H

#include <jansson.h>
#include <relay/common.h>

RELAY_BEGIN_DECLS

typedef struct relay_db relay_db;
typedef struct relay_db_result relay_db_result;

/* What a storage call returns.  Each class maps to one HTTP answer
 * (relay_db_reply_error). */
typedef enum {
        RELAY_DB_OK = 0,
        RELAY_DB_CONSTRAINT = 1,  /* unique or foreign key violation: 409 */
        RELAY_DB_BUSY = 2,        /* lock timeout, serialization failure: retry (503) */
        RELAY_DB_UNAVAILABLE = 3, /* the database is unreachable: 503 with Retry-After */
        RELAY_DB_ERROR = 4        /* anything else (bad SQL, type mismatch): 500 */
} relay_db_status;

/* The connection of the worker running REQ. */
RELAY_API relay_db *relay_db_of(relay_req *req);
/* The control thread's connection, for timers, jobs and event subscribers.
 * Only on the control thread: elsewhere it logs an error and returns NULL.
 * (Work functions of relay_work run on the thread pool and have no
 * connection: do storage in the done function.) */
RELAY_API relay_db *relay_plugin_db(relay_plugin *p);

/* Runs SQL.  OUT (may be NULL) receives the rows; free it with
 * relay_db_free().  Returns a relay_db_status. */
RELAY_API int relay_db_query(relay_db *db, relay_db_result **out, const char *sql, const char *types, ...);
RELAY_API int relay_db_vquery(relay_db *db, relay_db_result **out, const char *sql, const char *types, va_list ap);
/* The same without rows; *CHANGES (may be NULL) gets the affected row count. */
RELAY_API int relay_db_exec(relay_db *db, int64_t *changes, const char *sql, const char *types, ...);

/* Rows: relay_db_next() moves to the next row (the first on the first
 * call) and returns 0 past the last.  Columns count from 0. */
RELAY_API int relay_db_next(relay_db_result *r);
RELAY_API size_t relay_db_rows(relay_db_result *r);
RELAY_API size_t relay_db_columns(relay_db_result *r);
RELAY_API const char *relay_db_column_name(relay_db_result *r, size_t col);
RELAY_API int relay_db_is_null(relay_db_result *r, size_t col);
RELAY_API const char *relay_db_text(relay_db_result *r, size_t col); /* NULL for SQL NULL */
RELAY_API int64_t relay_db_int(relay_db_result *r, size_t col);
RELAY_API double relay_db_double(relay_db_result *r, size_t col);
RELAY_API const void *relay_db_blob(relay_db_result *r, size_t col, size_t *len);
/* A new reference to the column parsed as JSON (NULL when NULL or not JSON). */
RELAY_API json_t *relay_db_json(relay_db_result *r, size_t col);
/* Affected rows of an INSERT/UPDATE/DELETE (with or without RETURNING). */
RELAY_API int64_t relay_db_changes(relay_db_result *r);
RELAY_API void relay_db_free(relay_db_result *r);

/* One page of a keyset listing: R holds up to LIMIT + 1 rows (the query
 * asked for one more than the page); the reply is 200 {KEY: [ROW(r) for
 * the first LIMIT rows], "next_cursor": a cursor {"id": the "id" of the
 * last object shown} when there was a row more, else null}.  Frees R.
 * The query then reads the cursor's "id" as "rows after this id".  (1.2) */
typedef json_t *(*relay_row_fn)(relay_db_result *r);
RELAY_API int relay_reply_page(relay_req *req, relay_db_result *r, const char *key, long limit, relay_row_fn row);

/* A row as a JSON object, described once (1.4): each field names its
 * member, its column and how the column reads.  relay_row_json builds the
 * jansson object (for lists, events, error bodies); relay_reply_row writes
 * the same bytes straight into the reply, without one.  Arrays end with
 * {NULL}. */
enum relay_field_kind {
        RELAY_FIELD_TEXT, /* a string; null when NULL */
        RELAY_FIELD_INT,  /* an integer; null when NULL */
        RELAY_FIELD_TIME, /* milliseconds since the epoch as RFC 3339 (relay_time_format); null when NULL */
        RELAY_FIELD_JSON, /* a JSON document this daemon stored (written with a 'j' parameter): the reply
                           * copies its text as it is; null when NULL (relay_row_json: also when not JSON) */
        RELAY_FIELD_SET   /* true when the column is not NULL, else false */
};
typedef struct relay_row_field {
        const char *name;
        int column;
        int kind; /* enum relay_field_kind */
} relay_row_field;
/* The current row of R as an object (NULL when out of memory). */
RELAY_API json_t *relay_row_json(relay_db_result *r, const relay_row_field *fields);
/* Replies STATUS with the current row of R as relay_row_json would write
 * it; 500 when a text is not valid UTF-8.  R stays the caller's. */
RELAY_API int relay_reply_row(relay_req *req, int status, relay_db_result *r, const relay_row_field *fields);

/* Transactions.  A begin inside a transaction opens a savepoint, so code
 * can nest; commit and rollback close the innermost level. */
RELAY_API int relay_db_begin(relay_db *db);
RELAY_API int relay_db_commit(relay_db *db);
RELAY_API int relay_db_rollback(relay_db *db);
RELAY_API int relay_db_in_transaction(relay_db *db);

/* "sqlite" or "pgsql". */
RELAY_API const char *relay_db_dialect(relay_db *db);
/* The driver's last error message (no parameters or secrets in it). */
RELAY_API const char *relay_db_errmsg(relay_db *db);

/* Answers a failed storage call in the plugin's error style: 409
 * (constraint), 503 with Retry-After (busy, unavailable) or 500, logging
 * the driver's message for 500s. */
RELAY_API int relay_db_reply_error(relay_req *req, int status);

/* ------------------------------------------------------------ group commit */

/* A change that may share its transaction with other requests' changes.
 * FN runs later on the request's worker, inside one transaction with the
 * other changes its worker gathered in the same turn of its event loop,
 * in a savepoint of its own: it returns a relay_db_status, and anything
 * but RELAY_DB_OK undoes only its own work.  FN must not reply.  After the
 * shared COMMIT, DONE runs with FN's status, or the commit's when FN
 * succeeded and the commit failed, and replies (or returns RELAY_ASYNC).
 * The handler returns RELAY_ASYNC.  Nothing is acknowledged before it is
 * durable, and N concurrent changes cost one commit instead of N.
 * (ABI 1.1) */
typedef int (*relay_db_group_fn)(relay_req *req, relay_db *db, void *data);
typedef int (*relay_db_group_done_fn)(relay_req *req, int status, void *data);
RELAY_API int relay_db_group(relay_req *req, relay_db_group_fn fn, relay_db_group_done_fn done, void *data);

/* ---------------------------------------------------------------- migrations */

/* Ordered, numbered schema changes.  SQL runs on every engine; sql_sqlite
 * and sql_pgsql, when set, replace it on theirs.  A list ends with a zero
 * version.  Pending ones run at start-up, each plugin's in one transaction:
 * a failure stops start-up and leaves the schema as it was. */
typedef struct relay_migration {
        int version;
        const char *sql;
        const char *sql_sqlite;
        const char *sql_pgsql;
} relay_migration;

/* Call in init().  The list must outlive the plugin. */
RELAY_API int relay_migrations(relay_plugin *p, const relay_migration *list);

RELAY_END_DECLS
#endif
