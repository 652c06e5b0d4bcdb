/* webhooks.h - the webhooks plugin's parts: endpoints and their routes
 * (endpoints.c), signing secrets sealed at rest (secret.c), the event
 * subscriber that turns events into delivery jobs (fanout.c), the job
 * handler that delivers them (deliver.c) and the delivery log with
 * resend (log.c).  docs/webhooks.md has the API and the rules. */
#ifndef RELAY_WEBHOOKS_H
#define RELAY_WEBHOOKS_H

#include <stdbool.h>
#include <relay/plugin.h>

extern relay_plugin *wh_self;
extern const relay_migration webhooks_migrations[];

#define WH_JOB_KIND "webhook.deliver"
#define WH_QUEUE "webhooks"
#define WH_ID_LEN 40 /* "wh_" + 26 + NUL fits; room for the other prefixes */
#define WH_KEY_BYTES 32
#define WH_SECRET_PREFIX "whsec_"
#define WH_SECRET_LEN 64 /* "whsec_" + 44 base64 + NUL fits */
#define WH_SIG_LEN 64    /* "v1," + 44 base64 + NUL fits */

/* ------------------------------------------------------------- secret.c */

/* Loads [webhooks] secret_key_file, creating 32 random bytes (0600) when
 * it does not exist.  In start(). */
int wh_key_load(relay_plugin *p);
void wh_key_forget(void);
/* A new signing key: its 32 bytes in KEY and "whsec_<base64>" in TEXT. */
void wh_secret_new(uint8_t key[WH_KEY_BYTES], char text[WH_SECRET_LEN]);
/* KEY sealed with the key file's key (crypto_secretbox), as base64 text
 * (nonce then box); the caller frees it.  NULL when out of memory. */
char *wh_secret_seal(const uint8_t key[WH_KEY_BYTES]);
/* The 32 bytes of a sealed key; RELAY_ERR when it does not open (another
 * key file, damaged). */
int wh_secret_open(const char *sealed, uint8_t key[WH_KEY_BYTES]);
/* "v1,<base64 HMAC-SHA256(KEY, ID.TS.BODY)>" (Standard Webhooks). */
void wh_sign(const uint8_t key[WH_KEY_BYTES], const char *id, int64_t ts, const char *body, size_t len,
             char out[WH_SIG_LEN]);

/* ----------------------------------------------------------- endpoints.c */

int wh_endpoints_register(relay_plugin *p);
/* The columns an endpoint query selects, in this order (wh_endpoint_json). */
#define WH_ENDPOINT_COLUMNS                                                                                      \
        "id, url, events, description, enabled, disabled_reason, consecutive_failures, created_ms, updated_ms, " \
        "secret, old_secret, old_secret_until"
json_t *wh_endpoint_json(relay_db_result *r);
/* Loads TENANT's endpoint ID (WH_ENDPOINT_COLUMNS) into *OUT: RELAY_DB_OK
 * with one row or none. */
int wh_endpoint_load(relay_db *db, const char *tenant, const char *id, relay_db_result **out);

/* ------------------------------------------------------------- fanout.c */

int wh_fanout_register(relay_plugin *p);
/* Queues one delivery of message MESSAGE_ID to ENDPOINT_ID in DB's
 * transaction: the job and its row in webhooks_pending.  ID_OUT (40
 * bytes, may be NULL) receives the job id. */
int wh_enqueue(relay_db *db, const char *tenant, const char *endpoint_id, const char *message_id, const char *order_key,
               int64_t seq, char *id_out);

/* ------------------------------------------------------------ deliver.c */

int wh_deliver_register(relay_plugin *p);
/* Reads the [webhooks] keys deliveries use (start, reload). */
void wh_deliver_configure(relay_plugin *p);
/* Records the answers received and not yet stored (also at stop). */
void wh_deliver_flush(void);

/* ---------------------------------------------------------------- log.c */

int wh_log_register(relay_plugin *p);

/* ------------------------------------------------------------- helpers */

/* Is S "wh_" + a ULID? */
bool wh_endpoint_id_valid(const char *s);

#endif
