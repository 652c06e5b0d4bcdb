/* records.c - the records plugin: RelaySync's offline-first field
 * records (create with Idempotency-Key, list with filters and cursors,
 * causal-token updates, soft delete with tombstones), each change emitted
 * through the transactional outbox.  It offers the "records" service
 * (records_api.h) that the sync plugin's batch push and change feed use.
 * docs/records.md has the API and the rules. */
#include "records.h"

relay_plugin *records_self;

static const records_api api = {
        .size = sizeof(records_api),
        .apply = records_apply,
        .result_clear = records_result_clear,
        .changes = records_changes,
        .mark_synced = records_mark_synced,
};

static int init(relay_plugin *p)
{
        records_self = p;
        relay_conf_declare(p, "idempotency_ttl", RELAY_CONF_DURATION, "24h",
                           "how long an Idempotency-Key's answer is kept for replays");
        relay_conf_declare(p, "max_page_size", RELAY_CONF_INT, "200", "largest ?limit= of GET /v1/records");
        relay_conf_declare(p, "max_payload", RELAY_CONF_SIZE, "256k", "largest payload object of one record");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_rate_limit(p, NULL, 120) || relay_migrations(p, records_migrations) || records_read_register(p) ||
            records_write_register(p) || relay_service_provide(p, RECORDS_SERVICE, RECORDS_SERVICE_VERSION, &api))
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(records, .version = "1.0.0", .description = "RelaySync field records: idempotent, causal, soft-deleted",
             .requires = RELAY_REQUIRES("users"), .init = init);
