/* relay/idempotency.h - Idempotency-Key for unsafe requests.
 *
 * Semantics of the IETF draft "The Idempotency-Key HTTP Header Field"
 * (draft-ietf-httpapi-idempotency-key-header): a client that did not get
 * an answer sends the same request again with the same key, and gets the
 * first outcome instead of a second effect.
 *
 *   relay_idem *idem;
 *   relay_db_begin(db);
 *   relay_idem_begin(db, tenant, "records", key, fingerprint, &idem);
 *   if (relay_idem_state_of(idem) != RELAY_IDEM_NEW) {
 *           relay_db_rollback(db);
 *           rc = relay_idem_reply(req, idem);     // replay, 422 or 409
 *   } else {
 *           ... the change ...
 *           relay_idem_store(db, idem, 201, response, ttl_ms);
 *           relay_db_commit(db);                  // change and outcome together
 *           rc = relay_reply_json(req, 201, response);
 *   }
 *   relay_idem_release(idem);
 *
 * The outcome is stored in the transaction of the change, so a crash
 * leaves either both or neither.  While the first request runs, the same
 * key is "in flight": within a daemon a process-wide table says so, and on
 * PostgreSQL a transaction-scoped advisory lock tells other daemons. (1.1) */
#ifndef RELAY_IDEMPOTENCY_H
#define RELAY_IDEMPOTENCY_H

#include <jansson.h>
#include <relay/common.h>
#include <relay/db.h>

RELAY_BEGIN_DECLS

typedef enum {
        RELAY_IDEM_NEW = 0,      /* first use: do the work, then relay_idem_store() */
        RELAY_IDEM_REPLAY = 1,   /* done before with the same request: answer the stored outcome */
        RELAY_IDEM_MISMATCH = 2, /* used before for a different request: 422 */
        RELAY_IDEM_IN_FLIGHT = 3 /* the first request with this key is still running: 409 */
} relay_idem_state;

typedef struct relay_idem relay_idem;

/* The longest key accepted (the draft sets none; Stripe uses 255). */
#define RELAY_IDEM_KEY_MAX 255

/* Is KEY (a header value) acceptable: 1 to RELAY_IDEM_KEY_MAX visible
 * ASCII characters, optionally in double quotes (the draft's sf-string)? */
RELAY_API int relay_idem_key_valid(const char *key);

/* Looks KEY up for TENANT (may be NULL) in SCOPE (the kind of request it
 * keys, e.g. "records") inside DB's open transaction.  FINGERPRINT names
 * the request: two requests with equal fingerprints are "the same".  On
 * RELAY_DB_OK, *OUT is a handle to release with relay_idem_release() once
 * the transaction is over (it keeps the key in flight until then). */
RELAY_API int relay_idem_begin(relay_db *db, const char *tenant, const char *scope, const char *key,
                               const char *fingerprint, relay_idem **out);
RELAY_API relay_idem_state relay_idem_state_of(const relay_idem *idem);
/* REPLAY: the stored status and body (borrowed). */
RELAY_API int relay_idem_status(const relay_idem *idem);
RELAY_API json_t *relay_idem_body(const relay_idem *idem);
/* Records the outcome of a NEW request in DB's transaction, kept TTL_MS. */
RELAY_API int relay_idem_store(relay_db *db, relay_idem *idem, int status, const json_t *body, int64_t ttl_ms);
RELAY_API void relay_idem_release(relay_idem *idem);

/* Answers a request whose key is not NEW, in the plugin's error style:
 * REPLAY: the stored status and body with `Idempotent-Replayed: true`;
 * MISMATCH: 422 "idempotency_key_reused"; IN_FLIGHT: 409
 * "idempotency_key_in_flight" with Retry-After: 1. */
RELAY_API int relay_idem_reply(relay_req *req, const relay_idem *idem);

RELAY_END_DECLS
#endif
