/* sync.c - the sync plugin: what offline-first clients use to catch up
 * (GET /v1/sync/changes, a resumable change feed routed by sync policies)
 * and to come back online (POST /v1/sync/push, many changes answered one
 * by one), plus RelaySync's org-wide outbound queue (GET /v1/sync/queue,
 * POST /v1/sync/retry/:job).  It changes records only through the records
 * service and routes them with the policies service.  docs/sync.md. */
#include "sync.h"

relay_plugin *sync_self;
const records_api *sync_records;
const policies_api *sync_policies;

static int init(relay_plugin *p)
{
        sync_self = p;
        sync_records = relay_service_get(p, RECORDS_SERVICE, RECORDS_SERVICE_VERSION);
        sync_policies = relay_service_get(p, POLICIES_SERVICE, POLICIES_SERVICE_VERSION);
        if (!sync_records || !sync_policies) {
                relay_log(p, RELAY_LOG_ERROR, "sync needs the records and policies services");
                return RELAY_ERR;
        }
        relay_conf_declare(p, "page_size", RELAY_CONF_INT, "100", "changes per feed page when ?limit= is absent");
        relay_conf_declare(p, "max_page_size", RELAY_CONF_INT, "500", "largest ?limit= of the feed and the queue");
        relay_conf_declare(p, "max_batch", RELAY_CONF_INT, "100", "most changes in one POST /v1/sync/push");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_rate_limit(p, NULL, 120) || sync_feed_register(p) || sync_push_register(p) ||
            sync_queue_register(p) || sync_outbound_register(p))
                return RELAY_ERR;
        return RELAY_OK;
}

RELAY_PLUGIN(sync, .version = "1.0.0", .description = "offline sync: change feed, batch push, outbound queue",
             .requires = RELAY_REQUIRES("users", "records", "policies"), .init = init);
