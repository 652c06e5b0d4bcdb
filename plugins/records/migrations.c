/* migrations.c - the records table.  One row per record, tombstones
 * included: a deleted record keeps its row (deleted_ms set) so the change
 * feed can hand the deletion to offline clients.  change_seq is the
 * outbox sequence number of the record's last change, so ordering by it
 * is commit order; the feed index serves "changes since". */
#include "records.h"

const relay_migration records_migrations[] = {
        {1,
         "CREATE TABLE records_records (tenant TEXT NOT NULL, id TEXT NOT NULL, title TEXT NOT NULL,"
         " type TEXT NOT NULL, site TEXT, status TEXT NOT NULL, payload TEXT NOT NULL, causal TEXT NOT NULL,"
         " size BIGINT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, deleted_ms BIGINT,"
         " change_seq BIGINT NOT NULL, created_by TEXT, updated_by TEXT, PRIMARY KEY (tenant, id));"
         "CREATE INDEX records_feed ON records_records (tenant, change_seq);",
         NULL, NULL},
        {0, NULL, NULL, NULL}};
