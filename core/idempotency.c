/* idempotency.c - Idempotency-Key outcomes (relay/idempotency.h).
 *
 * An outcome row is written in the same transaction as the change it
 * answers for, so after a crash a retried request finds either both (and
 * is replayed) or neither (and runs again).  "In flight" needs no row:
 * inside one daemon a mutex-guarded set holds the keys being worked on
 * (workers are threads); across daemons on PostgreSQL a transaction-scoped
 * advisory lock on the key's hash does the same and goes away by itself
 * when the transaction ends, crash included.  Expired rows are ignored at
 * once and purged by a timer on the control loop. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include "daemon.h"
#include "hash.h"
#include "http.h"
#include "idempotency_internal.h"
#include "log.h"
#include "storage.h"

#define PURGE_EVERY_MS 60000
#define IN_FLIGHT_SLOTS 256

struct relay_idem {
        relay_idem_state state;
        int status;
        json_t *body;
        char *name;  /* tenant \x1f scope \x1f key: the in-flight entry */
        char *parts; /* tenant \0 scope \0 key \0, for the row */
        const char *tenant, *scope, *key;
        char *fingerprint;
        bool held; /* NAME is in the in-flight set */
};

typedef struct flight {
        struct flight *next;
        char *name;
} flight;

static pthread_mutex_t flights_lock = PTHREAD_MUTEX_INITIALIZER;
static flight *flights[IN_FLIGHT_SLOTS];
static uv_timer_t purge_timer;
static bool purging;

/* Adds NAME to the in-flight set; false when it is there already. */
static bool flight_take(const char *name)
{
        flight **slot = &flights[hash_string(name) % IN_FLIGHT_SLOTS];
        bool taken = false;
        pthread_mutex_lock(&flights_lock);
        for (flight *f = *slot; f; f = f->next)
                if (strcmp(f->name, name) == 0)
                        taken = true;
        flight *f = taken ? NULL : malloc(sizeof(*f));
        if (f && (f->name = strdup(name))) {
                f->next = *slot;
                *slot = f;
        } else if (f) {
                free(f);
                f = NULL;
        }
        pthread_mutex_unlock(&flights_lock);
        return f != NULL;
}

static void flight_drop(const char *name)
{
        flight **p = &flights[hash_string(name) % IN_FLIGHT_SLOTS];
        pthread_mutex_lock(&flights_lock);
        for (; *p; p = &(*p)->next)
                if (strcmp((*p)->name, name) == 0) {
                        flight *f = *p;
                        *p = f->next;
                        free(f->name);
                        free(f);
                        break;
                }
        pthread_mutex_unlock(&flights_lock);
}

RELAY_API int relay_idem_key_valid(const char *key)
{
        if (!key)
                return 0;
        size_t n = strlen(key);
        if (n >= 2 && key[0] == '"' && key[n - 1] == '"')
                key++, n -= 2;
        if (n == 0 || n > RELAY_IDEM_KEY_MAX)
                return 0;
        for (size_t i = 0; i < n; i++)
                if (key[i] < 0x21 || key[i] > 0x7e || key[i] == '"')
                        return 0;
        return 1;
}

/* The key without the sf-string quotes, into OUT (RELAY_IDEM_KEY_MAX + 1). */
static void unquote(const char *key, char *out)
{
        size_t n = strlen(key);
        if (n >= 2 && key[0] == '"' && key[n - 1] == '"')
                key++, n -= 2;
        memcpy(out, key, n);
        out[n] = '\0';
}

/* Reads the stored outcome of the key into IDEM (REPLAY or MISMATCH), or
 * leaves it NEW.  On PostgreSQL the same round trip takes a lock on the
 * key's hash for other daemons (in a range the core's own advisory locks,
 * 727001..., never use); *GOT is false when another transaction holds it.
 * Should that other one commit between this statement's snapshot and its
 * lock, the key's row is missed and the later insert of the outcome meets
 * the primary key: the change is rolled back and answered 409, never
 * applied twice. */
static int lookup(relay_db *db, const char *tenant, const char *scope, const char *key, relay_idem *idem, bool *got)
{
        relay_db_result *r;
        bool pg = strcmp(relay_db_dialect(db), "pgsql") == 0;
        int64_t lock = (int64_t)((hash_string(idem->name) >> 2) | (1ULL << 62));
        int rc = pg ? relay_db_query(db, &r,
                                     "SELECT i.fingerprint, i.status, i.body, pg_try_advisory_xact_lock(?)"
                                     " FROM (SELECT 1 AS one) AS x LEFT JOIN relay_idempotency i ON i.tenant = ?"
                                     " AND i.scope = ? AND i.key = ? AND i.expires_ms > ?",
                                     "isssi", lock, tenant, scope, key, relay_now_ms())
                    : relay_db_query(db, &r,
                                     "SELECT fingerprint, status, body FROM relay_idempotency"
                                     " WHERE tenant = ? AND scope = ? AND key = ? AND expires_ms > ?",
                                     "sssi", tenant, scope, key, relay_now_ms());
        *got = true;
        if (rc == RELAY_DB_OK && relay_db_next(r)) {
                if (pg)
                        *got = relay_db_int(r, 3) == 1 || strcmp(relay_db_text(r, 3), "t") == 0;
                const char *fp = relay_db_text(r, 0);
                if (fp && *got) {
                        bool same = strlen(fp) == strlen(idem->fingerprint) &&
                                    relay_equal_ct(fp, idem->fingerprint, strlen(fp));
                        idem->state = same ? RELAY_IDEM_REPLAY : RELAY_IDEM_MISMATCH;
                        idem->status = (int)relay_db_int(r, 1);
                        idem->body = relay_db_json(r, 2);
                }
        }
        relay_db_free(r);
        return rc;
}

RELAY_API int relay_idem_begin(relay_db *db, const char *tenant, const char *scope, const char *key,
                               const char *fingerprint, relay_idem **out)
{
        *out = NULL;
        if (!relay_idem_key_valid(key) || !scope || !fingerprint || !relay_db_in_transaction(db))
                return RELAY_DB_ERROR;
        char plain[RELAY_IDEM_KEY_MAX + 1];
        unquote(key, plain);
        tenant = tenant ? tenant : "";
        relay_idem *idem = calloc(1, sizeof(*idem));
        size_t n = strlen(tenant) + strlen(scope) + strlen(plain) + 3;
        if (!idem || !(idem->name = malloc(n)) || !(idem->parts = malloc(n)) ||
            !(idem->fingerprint = strdup(fingerprint))) {
                relay_idem_release(idem);
                return RELAY_DB_ERROR;
        }
        snprintf(idem->name, n, "%s\x1f%s\x1f%s", tenant, scope, plain);
        idem->tenant = memcpy(idem->parts, tenant, strlen(tenant) + 1);
        idem->scope = memcpy(idem->parts + strlen(tenant) + 1, scope, strlen(scope) + 1);
        idem->key = memcpy((char *)idem->scope + strlen(scope) + 1, plain, strlen(plain) + 1);
        *out = idem;
        idem->held = flight_take(idem->name);
        bool got = false;
        int rc = idem->held ? lookup(db, tenant, scope, plain, idem, &got) : RELAY_DB_OK;
        if (rc == RELAY_DB_OK && (!idem->held || !got))
                idem->state = RELAY_IDEM_IN_FLIGHT;
        return rc;
}

RELAY_API relay_idem_state relay_idem_state_of(const relay_idem *idem) { return idem->state; }
RELAY_API int relay_idem_status(const relay_idem *idem) { return idem->status; }
RELAY_API json_t *relay_idem_body(const relay_idem *idem) { return idem->body; }

RELAY_API int relay_idem_store(relay_db *db, relay_idem *idem, int status, const json_t *body, int64_t ttl_ms)
{
        if (!idem || idem->state != RELAY_IDEM_NEW)
                return RELAY_DB_ERROR;
        int64_t now = relay_now_ms(), changes = 0;
        /* An expired row for the key may still be there: take its place.  A
         * live one means another request with the key got there first: the
         * caller rolls its change back (409), it is not applied twice. */
        int rc = relay_db_exec(
                db, &changes,
                "INSERT INTO relay_idempotency (tenant, scope, key, fingerprint, status, body, created_ms,"
                " expires_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (tenant, scope, key) DO UPDATE"
                " SET fingerprint = excluded.fingerprint, status = excluded.status, body = excluded.body,"
                " created_ms = excluded.created_ms, expires_ms = excluded.expires_ms"
                " WHERE relay_idempotency.expires_ms <= ?",
                "ssssijiii", idem->tenant, idem->scope, idem->key, idem->fingerprint, (int64_t)status, body, now,
                now + (ttl_ms > 0 ? ttl_ms : 86400000), now);
        return rc == RELAY_DB_OK && changes == 0 ? RELAY_DB_CONSTRAINT : rc;
}

RELAY_API void relay_idem_release(relay_idem *idem)
{
        if (!idem)
                return;
        if (idem->held)
                flight_drop(idem->name);
        json_decref(idem->body);
        free(idem->name);
        free(idem->parts);
        free(idem->fingerprint);
        free(idem);
}

RELAY_API int relay_idem_reply(relay_req *req, const relay_idem *idem)
{
        switch (idem->state) {
        case RELAY_IDEM_REPLAY:
                relay_set_header(req, "Idempotent-Replayed", "true");
                return relay_reply_json(req, idem->status, json_incref(idem->body ? idem->body : json_null()));
        case RELAY_IDEM_MISMATCH:
                return relay_error(req, 422, "idempotency_key_reused",
                                   "this Idempotency-Key was used for a different request");
        case RELAY_IDEM_IN_FLIGHT:
                relay_set_header(req, "Retry-After", "1");
                return relay_error(req, 409, "idempotency_key_in_flight",
                                   "a request with this Idempotency-Key is still being processed");
        default: return relay_error(req, 500, "internal_error", "idempotency state");
        }
}

static void purge(uv_timer_t *t)
{
        (void)t;
        int64_t gone = 0;
        int rc = relay_db_exec(storage_control_db(), &gone, "DELETE FROM relay_idempotency WHERE expires_ms <= ?", "i",
                               relay_now_ms());
        if (rc != RELAY_DB_OK)
                log_warn("idempotency: purge failed: %s", relay_db_errmsg(storage_control_db()));
        else if (gone)
                log_debug("idempotency: purged %lld expired keys", (long long)gone);
}

int idem_start(void)
{
        uv_timer_init(relay_daemon.loop, &purge_timer);
        uv_timer_start(&purge_timer, purge, PURGE_EVERY_MS, PURGE_EVERY_MS);
        purging = true;
        return 0;
}

void idem_stop(void)
{
        if (purging)
                uv_close((uv_handle_t *)&purge_timer, NULL);
        purging = false;
}
