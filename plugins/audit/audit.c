/* audit.c - the audit plugin: a tamper-evident log of every event and
 * every authenticated write, per tenant, hash-chained and signed at
 * checkpoints (Ed25519), streamed live (SSE), queried by RelaySync and
 * RelayOne, and exported as evidence bundles that relay-audit-verify
 * checks offline.  docs/audit.md has the API, the formats and the rules. */
#include <stdio.h>
#include <string.h>
#include "audit.h"

relay_plugin *audit_self;

static void declare(relay_plugin *p)
{
        relay_conf_declare(p, "signing_key_file", RELAY_CONF_STRING, NULL,
                           "Ed25519 key that signs checkpoints, receipts and bundles (default "
                           "<data_dir>/audit-signing.key, created on first start)");
        relay_conf_declare(p, "checkpoint_every", RELAY_CONF_INT, "1000", "sign a tenant's head every N entries");
        relay_conf_declare(p, "checkpoint_interval", RELAY_CONF_DURATION, "60s",
                           "and every so often when its head moved");
        relay_conf_declare(p, "flush_interval", RELAY_CONF_DURATION, "20ms",
                           "how often queued authenticated writes are recorded and new entries streamed");
        relay_conf_declare(p, "max_pending", RELAY_CONF_INT, "100000",
                           "authenticated writes waiting to be recorded; past it they are counted and dropped");
        relay_conf_declare(p, "max_page_size", RELAY_CONF_INT, "200", "largest ?limit= of the audit lists");
        relay_conf_declare(p, "bundle_max_entries", RELAY_CONF_INT, "100000", "most entries in one evidence bundle");
}

/* relayctl audit verify TENANT */
static int cmd_verify(relay_plugin *p, int argc, char **argv, FILE *out)
{
        if (argc != 1) {
                fprintf(out, "usage: relayctl audit verify TENANT\n");
                return 2;
        }
        if (audit_key_load(p, false) != RELAY_OK)
                return 1;
        audit_verify_result v;
        if (audit_verify_chain(relay_plugin_db(p), argv[0], &v) != RELAY_DB_OK) {
                fprintf(out, "cannot read the audit log: %s\n", relay_db_errmsg(relay_plugin_db(p)));
                return 1;
        }
        json_t *doc = audit_verify_json(&v);
        char *text = json_dumps(doc, JSON_INDENT(2));
        fprintf(out, "%s\n", text ? text : "{}");
        free(text);
        json_decref(doc);
        return v.ok ? 0 : 1;
}

/* relayctl audit key: the public key offline verifiers need */
static int cmd_key(relay_plugin *p, int argc, char **argv, FILE *out)
{
        if (audit_key_load(p, false) != RELAY_OK)
                return 1;
        fprintf(out, "{\"algorithm\": \"ed25519\", \"key_id\": \"%s\", \"public_key\": \"%s\"}\n",
                audit_signing_key.key_id, audit_signing_key.pk_b64);
        return 0;
}

static int init(relay_plugin *p)
{
        audit_self = p;
        declare(p);
        relay_error_style(p, RELAY_ERRORS_OBJECT);
        if (relay_rate_limit(p, NULL, 120) || relay_migrations(p, audit_migrations) || audit_capture_register(p) ||
            audit_stream_register(p) || audit_routes_register(p) || audit_bundles_register(p) ||
            relay_command(p, "audit", "verify", "TENANT", cmd_verify) || relay_command(p, "audit", "key", "", cmd_key))
                return RELAY_ERR;
        return RELAY_OK;
}

static int start(relay_plugin *p)
{
        if (audit_key_load(p, true) != RELAY_OK)
                return RELAY_ERR;
        relay_log(p, RELAY_LOG_INFO, "signing with key %s", audit_signing_key.key_id);
        return audit_capture_start(p);
}

static int reload(relay_plugin *p)
{
        audit_read_limits(p);
        return RELAY_OK;
}

static void stop(relay_plugin *p)
{
        audit_capture_stop(p);
        audit_stream_free();
        audit_head_cache_free();
}

RELAY_PLUGIN(audit, .version = "1.0.0",
             .description = "tamper-evident audit log: hash chain, signed checkpoints, SSE stream, evidence bundles",
             .requires = RELAY_REQUIRES("users"), .init = init, .start = start, .reload = reload, .stop = stop);
