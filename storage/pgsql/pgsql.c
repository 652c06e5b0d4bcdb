/* pgsql.c - the PostgreSQL storage driver (libpq): one connection per
 * thread, `?` placeholders numbered to $1..$n, statements prepared once
 * per connection, error classes from SQLSTATE, PQreset after a loss. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>
#include <relay/driver.h>

#define MAX_PARAMS 64

/* Type OIDs (pg_type.h is server-side; these are stable). */
enum {
        OID_BOOL = 16,
        OID_BYTEA = 17,
        OID_INT8 = 20,
        OID_INT2 = 21,
        OID_INT4 = 23,
        OID_FLOAT4 = 700,
        OID_FLOAT8 = 701,
        OID_NUMERIC = 1700
};

#define PENDING_MAX 4

struct relay_driver_conn {
        PGconn *pg;
        relay_map *stmts; /* types + SQL -> statement name */
        int cache_max;
        unsigned next_name;
        char *pending[PENDING_MAX]; /* BEGIN, SAVEPOINT, RELEASE not sent yet ("late", below) */
        size_t n_pending;
};

static void quiet(void *arg, const char *message)
{
        (void)arg, (void)message; /* NOTICEs ("already exists, skipping") are not errors */
}

static PGconn *connect_pg(const relay_driver_config *cfg, char *err, size_t len)
{
        char timeout[24];
        snprintf(timeout, sizeof(timeout), "%llu", (unsigned long long)((cfg->connect_timeout_ms + 999) / 1000));
        const char *keys[] = {"dbname", "connect_timeout", "application_name", NULL};
        const char *values[] = {cfg->dsn && *cfg->dsn ? cfg->dsn : "", timeout, "relay-server", NULL};
        PGconn *pg = PQconnectdbParams(keys, values, 1);
        if (!pg || PQstatus(pg) != CONNECTION_OK) {
                snprintf(err, len, "cannot connect to PostgreSQL: %s", pg ? PQerrorMessage(pg) : "out of memory");
                for (char *p = err; *p; p++) /* one line */
                        if (*p == '\n')
                                *p = ' ';
                PQfinish(pg);
                return NULL;
        }
        PQsetNoticeProcessor(pg, quiet, NULL);
        return pg;
}

static relay_driver_conn *conn_open(const relay_driver_config *cfg, char *err, size_t len)
{
        relay_driver_conn *c = calloc(1, sizeof(*c));
        if (!c || !(c->stmts = relay_map_new())) {
                free(c);
                snprintf(err, len, "out of memory");
                return NULL;
        }
        c->cache_max = cfg->statement_cache;
        if (!(c->pg = connect_pg(cfg, err, len))) {
                relay_map_free(c->stmts, free);
                free(c);
                return NULL;
        }
        return c;
}

static void drop_pending(relay_driver_conn *c)
{
        for (size_t i = 0; i < c->n_pending; i++)
                free(c->pending[i]);
        c->n_pending = 0;
}

static void conn_close(relay_driver_conn *c)
{
        if (!c)
                return;
        drop_pending(c);
        relay_map_free(c->stmts, free);
        PQfinish(c->pg);
        free(c);
}

static int conn_reconnect(relay_driver_conn *c, char *err, size_t len)
{
        drop_pending(c); /* their transaction died with the session */
        PQreset(c->pg);
        relay_map_free(c->stmts, free); /* prepared statements died with the session */
        c->stmts = relay_map_new();
        if (PQstatus(c->pg) != CONNECTION_OK) {
                snprintf(err, len, "cannot reconnect to PostgreSQL: %s", PQerrorMessage(c->pg));
                return RELAY_DB_UNAVAILABLE;
        }
        PQsetNoticeProcessor(c->pg, quiet, NULL);
        return RELAY_DB_OK;
}

/* `?` -> `$N`, outside quotes, identifiers and comments. */
static char *number_placeholders(const char *sql)
{
        size_t n = strlen(sql);
        char *out = malloc(n * 4 + 1), *o = out;
        if (!out)
                return NULL;
        int count = 0;
        for (const char *p = sql; *p; p++) {
                if (*p == '\'' || *p == '"') {
                        char q = *p;
                        *o++ = *p++;
                        while (*p && *p != q)
                                *o++ = *p++;
                        if (!*p)
                                break;
                        *o++ = *p;
                } else if (p[0] == '-' && p[1] == '-') {
                        while (*p && *p != '\n')
                                *o++ = *p++;
                        if (!*p)
                                break;
                        *o++ = *p;
                } else if (*p == '?') {
                        o += sprintf(o, "$%d", ++count);
                } else {
                        *o++ = *p;
                }
        }
        *o = '\0';
        return out;
}

static int status_of(PGconn *pg, PGresult *res)
{
        if (PQstatus(pg) != CONNECTION_OK)
                return RELAY_DB_UNAVAILABLE;
        const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
        if (!state)
                return RELAY_DB_ERROR;
        if (!strcmp(state, "23505") || !strcmp(state, "23503"))
                return RELAY_DB_CONSTRAINT;
        if (!strcmp(state, "40001") || !strcmp(state, "40P01") || !strcmp(state, "55P03") || !strcmp(state, "57014"))
                return RELAY_DB_BUSY;
        if (!strncmp(state, "08", 2) || !strncmp(state, "57P", 3))
                return RELAY_DB_UNAVAILABLE;
        return RELAY_DB_ERROR;
}

static int fail(relay_driver_conn *c, PGresult *res, char *err, size_t len)
{
        const char *msg = res ? PQresultErrorMessage(res) : PQerrorMessage(c->pg);
        snprintf(err, len, "%s", msg && *msg ? msg : PQerrorMessage(c->pg));
        for (char *p = err; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        int status = status_of(c->pg, res);
        PQclear(res);
        return status;
}

static void read_rows(PGresult *res, relay_db_result *out)
{
        int cols = PQnfields(res), rows = PQntuples(res);
        relay_dbres_columns(out, (size_t)cols);
        for (int c = 0; c < cols; c++)
                relay_dbres_column_name(out, (size_t)c, PQfname(res, c));
        for (int r = 0; r < rows; r++) {
                relay_dbres_row(out);
                for (int c = 0; c < cols; c++) {
                        size_t col = (size_t)c;
                        if (PQgetisnull(res, r, c)) {
                                relay_dbres_null(out, col);
                                continue;
                        }
                        const char *v = PQgetvalue(res, r, c);
                        switch (PQftype(res, c)) {
                        case OID_INT2:
                        case OID_INT4:
                        case OID_INT8: relay_dbres_int(out, col, strtoll(v, NULL, 10)); break;
                        case OID_FLOAT4:
                        case OID_FLOAT8:
                        case OID_NUMERIC: relay_dbres_double(out, col, strtod(v, NULL)); break;
                        case OID_BOOL: relay_dbres_int(out, col, v[0] == 't'); break;
                        case OID_BYTEA: {
                                size_t n = 0;
                                unsigned char *b = PQunescapeBytea((const unsigned char *)v, &n);
                                relay_dbres_blob(out, col, b, b ? n : 0);
                                PQfreemem(b);
                                break;
                        }
                        default: relay_dbres_text(out, col, v, (size_t)PQgetlength(res, r, c)); break;
                        }
                }
        }
}

/* Typed numbers and blobs; text is left for the server to infer, so it
 * compares with whatever column type it meets (jsonb, timestamptz...). */
static void param_types(const relay_db_param *p, size_t n, Oid *types)
{
        for (size_t i = 0; i < n; i++)
                types[i] = p[i].type == 'i'   ? OID_INT8
                           : p[i].type == 'd' ? OID_FLOAT8
                           : p[i].type == 'b' ? OID_BYTEA
                                              : 0;
}

static char params_type(const relay_db_param *p) { return p->type; }

/* The statement cache's key: the parameters' types, '|', the SQL. */
static char *statement_key(const char *sql, const relay_db_param *p, size_t n)
{
        size_t sql_len = strlen(sql);
        char *key = malloc(n + 2 + sql_len);
        if (!key)
                return NULL;
        for (size_t i = 0; i < n; i++)
                key[i] = params_type(&p[i]);
        key[n] = '|';
        memcpy(key + n + 1, sql, sql_len + 1);
        return key;
}

/* The name SQL was prepared under on this connection, or NULL. */
static const char *cached_name(relay_driver_conn *c, const char *sql, const relay_db_param *p, size_t n)
{
        char *key = statement_key(sql, p, n);
        const char *name = key ? relay_map_get(c->stmts, key) : NULL;
        free(key);
        return name;
}

/* The prepared statement's name for SQL with these parameter types,
 * preparing it on first use. */
static const char *prepared(relay_driver_conn *c, const char *sql, const relay_db_param *p, size_t n, PGresult **failed)
{
        char *key = statement_key(sql, p, n);
        if (!key)
                return NULL;
        const char *name = relay_map_get(c->stmts, key);
        if (name) {
                free(key);
                return name;
        }
        Oid types[MAX_PARAMS];
        param_types(p, n, types);
        char *text = number_placeholders(sql);
        char *nm = malloc(24);
        if (!text || !nm) {
                free(text), free(nm), free(key);
                return NULL;
        }
        snprintf(nm, 24, "relay_%u", c->next_name++);
        PGresult *res = PQprepare(c->pg, nm, text, (int)n, types);
        free(text);
        if (PQresultStatus(res) != PGRES_COMMAND_OK) {
                *failed = res;
                free(nm), free(key);
                return NULL;
        }
        PQclear(res);
        if ((int)relay_map_count(c->stmts) >= c->cache_max) {
                /* Full cache: this statement is used once and dropped. */
                char drop[64];
                snprintf(drop, sizeof(drop), "DEALLOCATE %s", nm);
                PQclear(PQexec(c->pg, drop));
                free(nm), free(key);
                return NULL;
        }
        relay_map_put(c->stmts, key, nm);
        free(key);
        return nm;
}

/* ------------------------------------------------ transaction control, late
 *
 * Every statement is a round trip, and with the daemon and PostgreSQL on
 * one CPU a round trip is two context switches: a grouped create paid one
 * for its SAVEPOINT and one for its RELEASE, a batched sync job four.
 * BEGIN, SAVEPOINT and RELEASE SAVEPOINT (no parameters, no rows) are
 * therefore kept here and sent in one pipeline with the next statement
 * (libpq pipeline mode), which costs one round trip for all of them.
 * Nothing is kept while the transaction is in error: a RELEASE there fails,
 * and that failure must reach the caller that asked for it, at once.  A
 * kept command's own failure (it cannot fail otherwise) is reported by the
 * statement it travelled with. */
static bool can_wait(relay_driver_conn *c, const char *sql, size_t n)
{
#ifdef LIBPQ_HAS_PIPELINING
        if (n || c->n_pending == PENDING_MAX)
                return false;
        PGTransactionStatusType t = PQtransactionStatus(c->pg);
        if (strcmp(sql, "BEGIN") == 0)
                return t == PQTRANS_IDLE && c->n_pending == 0;
        return (t == PQTRANS_INTRANS || c->n_pending > 0) &&
               (strncmp(sql, "SAVEPOINT ", 10) == 0 || strncmp(sql, "RELEASE SAVEPOINT ", 18) == 0);
#else
        (void)c, (void)sql, (void)n;
        return false;
#endif
}

/* Sends what waits on its own (before a statement that cannot travel with
 * it): one round trip, the simple protocol running them in order. */
static int send_pending(relay_driver_conn *c, char *err, size_t len)
{
        if (!c->n_pending)
                return RELAY_DB_OK;
        size_t total = 1;
        for (size_t i = 0; i < c->n_pending; i++)
                total += strlen(c->pending[i]) + 2;
        char *script = malloc(total);
        if (!script)
                return snprintf(err, len, "out of memory"), RELAY_DB_ERROR;
        script[0] = '\0';
        for (size_t i = 0; i < c->n_pending; i++)
                strcat(strcat(script, c->pending[i]), "; ");
        drop_pending(c);
        PGresult *res = PQexec(c->pg, script);
        free(script);
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
                return fail(c, res, err, len);
        PQclear(res);
        return RELAY_DB_OK;
}

/* The kept commands, then the prepared statement NAME, in one pipeline.
 * *RES gets the statement's result (or the first failure's).  (Without
 * pipelining nothing is ever kept, so this is never called.) */
static int send_with_pending(relay_driver_conn *c, const char *name, int n, const char *const *values,
                             const int *lengths, const int *formats, PGresult **res)
{
#ifndef LIBPQ_HAS_PIPELINING
        (void)c, (void)name, (void)n, (void)values, (void)lengths, (void)formats;
        *res = NULL;
        return RELAY_DB_ERROR;
#else
        size_t kept = c->n_pending, sent = 0;
        bool ok = PQenterPipelineMode(c->pg) == 1;
        for (; ok && sent < kept; sent++)
                ok = PQsendQueryParams(c->pg, c->pending[sent], 0, NULL, NULL, NULL, NULL, 0) == 1;
        ok = ok && PQsendQueryPrepared(c->pg, name, n, values, lengths, formats, 0) == 1 && PQpipelineSync(c->pg) == 1;
        drop_pending(c);
        *res = NULL;
        /* every command's result, each followed by NULL, then the sync */
        for (size_t i = 0; ok && i <= kept; i++) {
                PGresult *r = PQgetResult(c->pg);
                ExecStatusType s = PQresultStatus(r);
                bool failed = !r || (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK);
                if (!*res && (i == kept || failed))
                        *res = r; /* the first failure, or the statement's result */
                else
                        PQclear(r);
                if (!r)
                        ok = false;
                else
                        while ((r = PQgetResult(c->pg)) != NULL)
                                PQclear(r);
        }
        PGresult *sync = ok ? PQgetResult(c->pg) : NULL;
        ok = ok && PQresultStatus(sync) == PGRES_PIPELINE_SYNC;
        PQclear(sync);
        if (PQexitPipelineMode(c->pg) != 1)
                ok = false;
        return ok ? RELAY_DB_OK : RELAY_DB_UNAVAILABLE;
#endif
}

static int conn_exec(relay_driver_conn *c, const char *sql, const relay_db_param *params, size_t n,
                     relay_db_result *out, char *err, size_t len)
{
        if (can_wait(c, sql, n)) {
                char *kept = strdup(sql);
                if (kept) {
                        c->pending[c->n_pending++] = kept;
                        return RELAY_DB_OK;
                }
        }
        PGresult *res;
        if (!params && !out) {
                int rc = send_pending(c, err, len);
                if (rc != RELAY_DB_OK)
                        return rc;
                res = PQexec(c->pg, sql); /* a script: several statements, no parameters */
        } else {
                if (n > MAX_PARAMS)
                        return snprintf(err, len, "too many parameters"), RELAY_DB_ERROR;
                const char *values[MAX_PARAMS];
                int lengths[MAX_PARAMS], formats[MAX_PARAMS];
                char numbers[MAX_PARAMS][32];
                for (size_t i = 0; i < n; i++) {
                        const relay_db_param *p = &params[i];
                        formats[i] = p->type == 'b';
                        lengths[i] = (int)p->len;
                        values[i] = p->type == 'n' ? NULL : p->s;
                        if (p->type == 'i')
                                snprintf(numbers[i], sizeof(numbers[i]), "%lld", (long long)p->i),
                                        values[i] = numbers[i];
                        else if (p->type == 'd')
                                snprintf(numbers[i], sizeof(numbers[i]), "%.17g", p->d), values[i] = numbers[i];
                }
                /* a statement seen before travels with what waits; a new one is
                 * prepared (a round trip that may fail) after that was sent */
                const char *name = c->n_pending ? cached_name(c, sql, params, n) : NULL;
                if (name) {
                        if (send_with_pending(c, name, (int)n, values, lengths, formats, &res) != RELAY_DB_OK)
                                return fail(c, res, err, len);
                } else {
                        PGresult *failed = NULL;
                        int rc = send_pending(c, err, len);
                        if (rc != RELAY_DB_OK)
                                return rc;
                        name = prepared(c, sql, params, n, &failed);
                        if (failed)
                                return fail(c, failed, err, len);
                        if (name) {
                                res = PQexecPrepared(c->pg, name, (int)n, values, lengths, formats, 0);
                        } else {
                                Oid types[MAX_PARAMS];
                                param_types(params, n, types);
                                char *text = number_placeholders(sql);
                                res = PQexecParams(c->pg, text ? text : sql, (int)n, types, values, lengths, formats,
                                                   0);
                                free(text);
                        }
                }
        }
        ExecStatusType s = PQresultStatus(res);
        if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK)
                return fail(c, res, err, len);
        if (out) {
                if (s == PGRES_TUPLES_OK)
                        read_rows(res, out);
                const char *tuples = PQcmdTuples(res);
                /* SELECT reports its row count too; only writes count as changes */
                if (*tuples && strncmp(PQcmdStatus(res), "SELECT", 6) != 0)
                        relay_dbres_changes(out, strtoll(tuples, NULL, 10));
        }
        PQclear(res);
        return RELAY_DB_OK;
}

RELAY_STORAGE_DRIVER(pgsql, .dialect = "pgsql", .open = conn_open, .close = conn_close, .exec = conn_exec,
                     .reconnect = conn_reconnect);
