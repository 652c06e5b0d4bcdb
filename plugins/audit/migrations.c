/* migrations.c - the audit tables.
 *
 * audit_entries is append-only: the plugin never updates or deletes a row
 * (verification finds anyone else who does).  body holds the canonical
 * JSON the hash covers; the other columns are copies for filtering, which
 * verification checks against the body.  audit_heads holds each tenant's
 * last seq and hash: appends lock that row, so daemons sharing a
 * PostgreSQL database extend one chain without forks. */
#include "audit.h"

#define ENTRIES                                                                                          \
        "CREATE TABLE audit_entries (tenant TEXT NOT NULL, seq BIGINT NOT NULL, id TEXT NOT NULL,"       \
        " time_ms BIGINT NOT NULL, kind TEXT NOT NULL, type TEXT NOT NULL, actor TEXT, target TEXT,"     \
        " event_id TEXT, model TEXT, policy TEXT, body TEXT NOT NULL, prev_hash TEXT NOT NULL,"          \
        " hash TEXT NOT NULL, PRIMARY KEY (tenant, seq));"                                               \
        "CREATE UNIQUE INDEX audit_entries_id ON audit_entries (id);"                                    \
        "CREATE UNIQUE INDEX audit_entries_event ON audit_entries (tenant, event_id);"                   \
        "CREATE INDEX audit_entries_time ON audit_entries (tenant, time_ms);"                            \
        "CREATE TABLE audit_heads (tenant TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL,"    \
        " checkpoint_seq BIGINT NOT NULL DEFAULT 0);"                                                    \
        "CREATE TABLE audit_checkpoints (tenant TEXT NOT NULL, seq BIGINT NOT NULL, hash TEXT NOT NULL," \
        " time_ms BIGINT NOT NULL, key_id TEXT NOT NULL, signature TEXT NOT NULL, PRIMARY KEY (tenant, seq));"

#define BUNDLES(blob)                                                                                        \
        "CREATE TABLE audit_bundles (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, from_ms BIGINT NOT NULL,"    \
        " to_ms BIGINT NOT NULL, components TEXT, entries BIGINT NOT NULL, first_seq BIGINT NOT NULL,"       \
        " last_seq BIGINT NOT NULL, sha256 TEXT NOT NULL, size BIGINT NOT NULL, created_ms BIGINT NOT NULL," \
        " created_by TEXT, data " blob " NOT NULL);"                                                         \
        "CREATE INDEX audit_bundles_tenant ON audit_bundles (tenant, created_ms);"

const relay_migration audit_migrations[] = {
        {1, ENTRIES, NULL, NULL}, {2, NULL, BUNDLES("BLOB"), BUNDLES("BYTEA")}, {0, NULL, NULL, NULL}};
