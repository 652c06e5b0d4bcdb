/* migrate.c - numbered schema changes per owner ("core", then each plugin
 * in load order), recorded in relay_schema.  Each owner's pending changes
 * run in one transaction, so a failure leaves that owner's schema as it
 * was (SQLite and PostgreSQL both have transactional DDL).  On PostgreSQL
 * an advisory lock keeps daemons starting together from racing. */
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "log.h"
#include "migrate.h"
#include "storage.h"

#define MIGRATION_LOCK "727002"

typedef struct owner {
        struct owner *next;
        relay_plugin *plugin; /* NULL: the core */
        const relay_migration *list;
} owner;

static owner *owners;

/* The core's tables: the event outbox, subscriber positions, the job queue. */
static const relay_migration core_migrations[] = {
        {1, NULL,
         "CREATE TABLE relay_events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tenant TEXT,"
         " type TEXT NOT NULL, payload TEXT NOT NULL, created_ms INTEGER NOT NULL);"
         "CREATE TABLE relay_event_cursors (name TEXT PRIMARY KEY, seq INTEGER NOT NULL);",
         "CREATE TABLE relay_events (seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, tenant TEXT,"
         " type TEXT NOT NULL, payload TEXT NOT NULL, created_ms BIGINT NOT NULL);"
         "CREATE TABLE relay_event_cursors (name TEXT PRIMARY KEY, seq BIGINT NOT NULL);"},
        {2,
         "CREATE TABLE relay_jobs (id TEXT PRIMARY KEY, tenant TEXT, kind TEXT NOT NULL, queue TEXT NOT NULL,"
         " target TEXT, payload TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL,"
         " max_attempts INTEGER NOT NULL, run_at BIGINT NOT NULL, lease_until BIGINT, locked_by TEXT,"
         " last_error TEXT, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);"
         "CREATE INDEX relay_jobs_due ON relay_jobs (kind, state, run_at);"
         "CREATE INDEX relay_jobs_tenant ON relay_jobs (tenant, id);",
         NULL, NULL},
        /* Idempotency-Key outcomes (relay/idempotency.h); tenant '' when none. */
        {3,
         "CREATE TABLE relay_idempotency (tenant TEXT NOT NULL, scope TEXT NOT NULL, key TEXT NOT NULL,"
         " fingerprint TEXT NOT NULL, status INTEGER NOT NULL, body TEXT, created_ms BIGINT NOT NULL,"
         " expires_ms BIGINT NOT NULL, PRIMARY KEY (tenant, scope, key));"
         "CREATE INDEX relay_idempotency_expiry ON relay_idempotency (expires_ms);",
         NULL, NULL},
        /* relay_job_pending: a record's outbound jobs, by target. */
        {4, "CREATE INDEX relay_jobs_target ON relay_jobs (tenant, target, state);", NULL, NULL},
        /* expired leases, found without scanning finished jobs */
        {5, "CREATE INDEX relay_jobs_lease ON relay_jobs (state, lease_until);", NULL, NULL},
        /* Each index holds only the jobs its one query looks for, so a job
         * moving from queued to running to done touches 5 index entries
         * instead of 12 (and on SQLite, fewer pages per commit).  The
         * queries repeat these WHERE terms word for word: SQLite uses a
         * partial index only when the query's own terms match it. */
        {6,
         "DROP INDEX relay_jobs_due; DROP INDEX relay_jobs_target; DROP INDEX relay_jobs_lease;"
         "CREATE INDEX relay_jobs_due ON relay_jobs (kind, run_at) WHERE state = 'queued';"
         "CREATE INDEX relay_jobs_target ON relay_jobs (tenant, target) WHERE state IN ('queued', 'running');"
         "CREATE INDEX relay_jobs_lease ON relay_jobs (lease_until) WHERE state = 'running';"
         "CREATE INDEX relay_jobs_done ON relay_jobs (updated_at) WHERE state = 'done';",
         NULL, NULL},
        {0, NULL, NULL, NULL}};

static int add_owner(relay_plugin *p, const relay_migration *list)
{
        owner *o = calloc(1, sizeof(*o));
        if (!o)
                return RELAY_ERR;
        o->plugin = p;
        o->list = list;
        owner **tail = &owners;
        while (*tail)
                tail = &(*tail)->next;
        *tail = o;
        return RELAY_OK;
}

RELAY_API int relay_migrations(relay_plugin *p, const relay_migration *list)
{
        if (relay_daemon.initialising != p || !list) {
                log_write(RELAY_LOG_ERROR, relay_plugin_name(p), NULL,
                          "relay_migrations may only be called from init()");
                return RELAY_ERR;
        }
        for (const relay_migration *m = list; m->version; m++)
                if (m->version < 1 || (m != list && m->version <= m[-1].version) ||
                    !(m->sql || (m->sql_sqlite && m->sql_pgsql))) {
                        log_write(RELAY_LOG_ERROR, p->name, NULL,
                                  "migration %d: versions must increase from 1, and each needs sql (or both dialects)",
                                  m->version);
                        return RELAY_ERR;
                }
        return add_owner(p, list);
}

void migrate_free(void)
{
        for (owner *o = owners, *n; o; o = n) {
                n = o->next;
                free(o);
        }
        owners = NULL;
}

static const char *owner_name(const owner *o) { return o->plugin ? o->plugin->name : "core"; }

static const char *sql_for(relay_db *db, const relay_migration *m)
{
        const char *dialect = relay_db_dialect(db);
        if (strcmp(dialect, "sqlite") == 0 && m->sql_sqlite)
                return m->sql_sqlite;
        if (strcmp(dialect, "pgsql") == 0 && m->sql_pgsql)
                return m->sql_pgsql;
        return m->sql;
}

/* Takes the migration lock: PostgreSQL's advisory lock (daemons starting
 * together on one database), SQLite's write lock (BEGIN IMMEDIATE). */
static int begin_locked(relay_db *db)
{
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK && strcmp(relay_db_dialect(db), "pgsql") == 0)
                rc = relay_db_exec(db, NULL, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK ")", "");
        return rc;
}

/* CREATE TABLE IF NOT EXISTS is not safe when two PostgreSQL sessions run
 * it at once: it runs under the migration lock, and if a session outside
 * that lock created the table meanwhile (PostgreSQL then reports a unique
 * violation in its catalog), the table is there: try once more. */
static int ensure_table(relay_db *db)
{
        int rc = RELAY_DB_ERROR;
        for (int attempt = 0; attempt < 3; attempt++) {
                rc = begin_locked(db);
                if (rc == RELAY_DB_OK)
                        rc = storage_script(db, "CREATE TABLE IF NOT EXISTS relay_schema (plugin TEXT NOT NULL,"
                                                " version INTEGER NOT NULL, applied_ms BIGINT NOT NULL,"
                                                " PRIMARY KEY (plugin, version))");
                if (rc == RELAY_DB_OK)
                        rc = relay_db_commit(db);
                else if (relay_db_in_transaction(db))
                        relay_db_rollback(db);
                if (rc != RELAY_DB_CONSTRAINT)
                        break;
        }
        return rc;
}

static int applied_version(relay_db *db, const char *name, int64_t *version)
{
        relay_db_result *r;
        int rc = relay_db_query(db, &r, "SELECT COALESCE(MAX(version), 0) FROM relay_schema WHERE plugin = ?", "s",
                                name);
        *version = rc == RELAY_DB_OK && relay_db_next(r) ? relay_db_int(r, 0) : 0;
        relay_db_free(r);
        return rc;
}

/* One owner's pending migrations in one transaction. */
static int apply_owner(relay_db *db, const owner *o, char *err, size_t err_len)
{
        int rc = begin_locked(db);
        int64_t have = 0;
        if (rc == RELAY_DB_OK)
                rc = applied_version(db, owner_name(o), &have);
        const relay_migration *m = o->list;
        for (; rc == RELAY_DB_OK && m->version; m++) {
                if (m->version <= have)
                        continue;
                const char *sql = sql_for(db, m);
                if (!sql) {
                        snprintf(err, err_len, "plugin '%s' migration %d has no SQL for %s", owner_name(o), m->version,
                                 relay_db_dialect(db));
                        relay_db_rollback(db);
                        return -1;
                }
                rc = storage_script(db, sql);
                if (rc == RELAY_DB_OK)
                        rc = relay_db_exec(db, NULL,
                                           "INSERT INTO relay_schema (plugin, version, applied_ms) VALUES (?, ?, ?)",
                                           "sii", owner_name(o), (int64_t)m->version, relay_now_ms());
                if (rc == RELAY_DB_OK)
                        log_info("migration: %s %d applied", owner_name(o), m->version);
                else
                        break;
        }
        if (rc == RELAY_DB_OK)
                rc = relay_db_commit(db);
        if (rc != RELAY_DB_OK) {
                snprintf(err, err_len, "plugin '%s' migration %d failed on %s: %s", owner_name(o),
                         m->version ? m->version : (int)have, relay_db_dialect(db), relay_db_errmsg(db));
                if (relay_db_in_transaction(db))
                        relay_db_rollback(db);
                return -1;
        }
        return 0;
}

static int ensure_core_owner(void)
{
        if (owners && !owners->plugin)
                return 0;
        owner *o = calloc(1, sizeof(*o));
        if (!o)
                return -1;
        o->list = core_migrations;
        o->next = owners; /* the core's tables first */
        owners = o;
        return 0;
}

int migrate_apply(relay_db *db, char *err, size_t err_len)
{
        if (ensure_core_owner() != 0 || ensure_table(db) != RELAY_DB_OK) {
                snprintf(err, err_len, "cannot create relay_schema: %s", relay_db_errmsg(db));
                return -1;
        }
        for (owner *o = owners; o; o = o->next)
                if (apply_owner(db, o, err, err_len) != 0)
                        return -1;
        return 0;
}

/* Does relay_schema exist yet?  (Status reads; it never creates.) */
static int schema_table_exists(relay_db *db, bool *exists)
{
        relay_db_result *r;
        int rc = strcmp(relay_db_dialect(db), "pgsql") == 0
                         ? relay_db_query(db, &r, "SELECT 1 FROM pg_tables WHERE tablename = 'relay_schema'", "")
                         : relay_db_query(db, &r, "SELECT 1 FROM sqlite_master WHERE name = 'relay_schema'", "");
        *exists = rc == RELAY_DB_OK && relay_db_next(r);
        relay_db_free(r);
        return rc;
}

int migrate_status(relay_db *db, FILE *out, char *err, size_t err_len)
{
        bool exists = false;
        if (ensure_core_owner() != 0 || schema_table_exists(db, &exists) != RELAY_DB_OK) {
                snprintf(err, err_len, "cannot read relay_schema: %s", relay_db_errmsg(db));
                return -1;
        }
        int pending = 0;
        fprintf(out, "%-16s %-8s %-8s %s\n", "plugin", "applied", "latest", "pending");
        for (owner *o = owners; o; o = o->next) {
                int64_t have = 0;
                if (exists && applied_version(db, owner_name(o), &have) != RELAY_DB_OK) {
                        snprintf(err, err_len, "cannot read relay_schema: %s", relay_db_errmsg(db));
                        return -1;
                }
                int latest = 0, n = 0;
                char list[256] = "";
                size_t len = 0;
                for (const relay_migration *m = o->list; m->version; m++) {
                        latest = m->version;
                        if (m->version > have) {
                                n++;
                                int w = snprintf(list + len, sizeof(list) - len, "%s%d", len ? "," : "", m->version);
                                if (w > 0 && (size_t)w < sizeof(list) - len)
                                        len += (size_t)w;
                        }
                }
                fprintf(out, "%-16s %-8lld %-8d %s\n", owner_name(o), (long long)have, latest, n ? list : "-");
                pending += n;
        }
        return pending;
}
