/* webhooks.c - the webhooks plugin: tenants register HTTP(S) endpoints
 * with event patterns; every committed event of the tenant that matches
 * becomes one delivery job per endpoint in the durable job queue (visible
 * in GET /v1/sync/queue), POSTed with Standard Webhooks signatures, retried
 * with backoff on network errors, 5xx and 429, dead-lettered after
 * max_attempts; an endpoint failing disable_after times in a row is
 * disabled until its owner re-enables it.  Deliveries of one record reach
 * an endpoint in commit order.  docs/webhooks.md has the API and the rules. */
#include "webhooks.h"

relay_plugin *wh_self;

static int init(relay_plugin *p)
{
        wh_self = p;
        relay_conf_declare(p, "allow_private_targets", RELAY_CONF_BOOL, "false",
                           "deliver to loopback, private and link-local addresses (SSRF guard off)");
        relay_conf_declare(p, "timeout", RELAY_CONF_DURATION, "10s", "a delivery's whole exchange");
        relay_conf_declare(p, "connect_timeout", RELAY_CONF_DURATION, "5s", "a delivery's connection");
        relay_conf_declare(p, "max_redirects", RELAY_CONF_INT, "3", "redirects followed per delivery (0: none)");
        relay_conf_declare(p, "max_attempts", RELAY_CONF_INT, "8", "attempts of a delivery before its dead letter");
        relay_conf_declare(p, "concurrency", RELAY_CONF_INT, "64", "deliveries in flight per daemon");
        relay_conf_declare(p, "disable_after", RELAY_CONF_INT, "20",
                           "consecutive failed attempts that disable an endpoint (0: never)");
        relay_conf_declare(p, "rotation_grace", RELAY_CONF_DURATION, "24h",
                           "the previous secret also signs for this long after a rotation");
        relay_conf_declare(p, "max_endpoints", RELAY_CONF_INT, "100", "endpoints per tenant");
        relay_conf_declare(p, "response_excerpt", RELAY_CONF_SIZE, "1k",
                           "bytes of a receiver's answer kept in the delivery log");
        relay_conf_declare(p, "secret_key_file", RELAY_CONF_STRING, "",
                           "key sealing the signing secrets (default DATA_DIR/webhooks.key, made on first start)");
        relay_conf_declare(p, "max_retry_after", RELAY_CONF_DURATION, "1h", "longest Retry-After honoured");
        relay_conf_declare(p, "keep_messages", RELAY_CONF_DURATION, "30d",
                           "messages (for resends) and the delivery log are kept this long");
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_rate_limit(p, NULL, 120) || relay_migrations(p, webhooks_migrations) || wh_endpoints_register(p) ||
            wh_log_register(p) || wh_fanout_register(p) || wh_deliver_register(p))
                return RELAY_ERR;
        return RELAY_OK;
}

static relay_timer *purge_timer;

/* Old messages and delivery log rows go, a bounded batch at a time. */
static void purge(relay_plugin *p, void *data)
{
        (void)data;
        relay_db *db = relay_plugin_db(p);
        int64_t before = relay_now_ms() - (int64_t)relay_conf_duration_ms(p, "keep_messages");
        int64_t gone = 0, n = 0;
        const char *tables[] = {"webhooks_messages", "webhooks_attempts"};
        for (size_t i = 0; i < 2; i++) {
                char sql[200];
                snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE created_ms < ?", tables[i]);
                if (relay_db_exec(db, &n, sql, "i", before) == RELAY_DB_OK)
                        gone += n;
                else
                        relay_log(p, RELAY_LOG_WARN, "cannot purge %s: %s", tables[i], relay_db_errmsg(db));
        }
        if (gone)
                relay_log(p, RELAY_LOG_INFO, "purged %lld messages and log rows older than keep_messages",
                          (long long)gone);
}

static int start(relay_plugin *p)
{
        if (wh_key_load(p) != RELAY_OK)
                return RELAY_ERR;
        wh_deliver_configure(p);
        uint64_t keep = relay_conf_duration_ms(p, "keep_messages"), every = keep / 2;
        if (every > 3600 * 1000)
                every = 3600 * 1000; /* hourly, or twice per keep_messages when that is shorter */
        purge_timer = relay_timer_start(p, 1000, every ? every : 1, purge, NULL);
        return purge_timer ? RELAY_OK : RELAY_ERR;
}

static int reload(relay_plugin *p)
{
        wh_deliver_configure(p); /* allow_private_targets may have been turned off */
        return RELAY_OK;
}

static void stop(relay_plugin *p)
{
        (void)p;
        wh_deliver_flush(); /* the answers of the last turn (cancelled requests record nothing) */
        relay_timer_stop(purge_timer);
        purge_timer = NULL;
        wh_key_forget();
}

RELAY_PLUGIN(webhooks, .version = "1.0.0", .description = "signed webhook deliveries of RelaySync events",
             .requires = RELAY_REQUIRES("users"), .init = init, .start = start, .reload = reload, .stop = stop);
