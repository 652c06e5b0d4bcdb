/* migrations.c - the webhooks tables.
 *
 *   webhooks_endpoints  one row per endpoint; secret and old_secret are
 *                       sealed (secret.c), never the key itself; events
 *                       is the JSON array of patterns.
 *   webhooks_messages   the body of each event as delivered, built once:
 *                       every attempt and endpoint sends the same bytes.
 *                       order_key and seq place it for per-record order.
 *   webhooks_pending    one row per delivery job not finished for good,
 *                       so a job waits while an earlier event of the same
 *                       record is pending for the same endpoint.
 *   webhooks_attempts   the delivery log: one row per attempt.
 * Messages and attempts older than [webhooks] keep_messages are purged
 * (webhooks.c). */
#include "webhooks.h"

const relay_migration webhooks_migrations[] = {
        {1,
         "CREATE TABLE webhooks_endpoints (tenant TEXT NOT NULL, id TEXT NOT NULL, url TEXT NOT NULL,"
         " events TEXT NOT NULL, description TEXT, enabled INTEGER NOT NULL, disabled_reason TEXT,"
         " consecutive_failures BIGINT NOT NULL, secret TEXT NOT NULL, old_secret TEXT, old_secret_until BIGINT,"
         " created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, PRIMARY KEY (tenant, id));"
         "CREATE TABLE webhooks_messages (tenant TEXT NOT NULL, id TEXT NOT NULL, type TEXT NOT NULL,"
         " body TEXT NOT NULL, order_key TEXT NOT NULL, seq BIGINT NOT NULL, created_ms BIGINT NOT NULL,"
         " PRIMARY KEY (tenant, id));"
         "CREATE TABLE webhooks_pending (job_id TEXT NOT NULL PRIMARY KEY, endpoint_id TEXT NOT NULL,"
         " order_key TEXT NOT NULL, seq BIGINT NOT NULL);"
         "CREATE INDEX webhooks_pending_order ON webhooks_pending (endpoint_id, order_key, seq);"
         "CREATE TABLE webhooks_attempts (id TEXT NOT NULL PRIMARY KEY, tenant TEXT NOT NULL,"
         " endpoint_id TEXT NOT NULL, job_id TEXT NOT NULL, message_id TEXT NOT NULL, event_type TEXT NOT NULL,"
         " attempt INTEGER NOT NULL, status_code INTEGER, outcome TEXT NOT NULL, error TEXT,"
         " latency_ms BIGINT NOT NULL, response_excerpt TEXT, created_ms BIGINT NOT NULL);"
         "CREATE INDEX webhooks_attempts_endpoint ON webhooks_attempts (tenant, endpoint_id, id);",
         NULL, NULL},
        /* retention (keep_messages): purges by age */
        {2,
         "CREATE INDEX webhooks_messages_age ON webhooks_messages (created_ms);"
         "CREATE INDEX webhooks_attempts_age ON webhooks_attempts (created_ms);",
         NULL, NULL},
        {0, NULL, NULL, NULL}};
