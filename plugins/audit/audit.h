/* audit.h - the audit plugin's shared declarations.
 *
 * Every committed event and every authenticated write becomes an entry of
 * its tenant's hash chain: entry N's hash covers entry N-1's hash and the
 * SHA-256 of entry N's canonical JSON body, so changing, removing or
 * reordering any entry breaks every hash after it.  Checkpoints sign a
 * chain head with the daemon's Ed25519 key.  docs/audit.md has the API,
 * the formats and the rules. */
#ifndef AUDIT_H
#define AUDIT_H

#include <relay/plugin.h>
#include "verify.h"

extern relay_plugin *audit_self;

/* ------------------------------------------------------------ keys.c */

typedef struct audit_key {
        unsigned char pk[32];
        unsigned char sk[64];
        char key_id[17]; /* first 16 hex digits of SHA-256(pk) */
        char pk_b64[64];
} audit_key;

extern audit_key audit_signing_key;
/* Loads [audit] signing_key_file; when it is missing, creates it (0600)
 * if CREATE (the daemon), else fails (relayctl must not make a second key). */
int audit_key_load(relay_plugin *p, bool create);
/* Base64 (standard alphabet) of the Ed25519 signature of MSG into OUT (100 bytes). */
void audit_sign(const void *msg, size_t len, char *out, size_t out_len);

/* ------------------------------------------------------------ chain.c */

/* A new entry before it is chained: BODY gets id, tenant, seq and time. */
typedef struct audit_draft {
        const char *tenant;
        const char *kind;     /* "event" or "request" */
        const char *type;     /* event type, or "request" */
        const char *actor;    /* subject, or NULL */
        const char *target;   /* what it acted on, or NULL */
        const char *event_id; /* for events: deduplicates redelivery */
        const char *model;    /* RelayOne filters, or NULL */
        const char *policy;
        json_t *body; /* borrowed: the fields of the entry */
} audit_draft;

/* Appends D to its tenant's chain in DB's open transaction.  An event
 * already recorded is skipped (RELAY_DB_OK).  Returns a relay_db_status. */
int audit_append(relay_db *db, const audit_draft *d);
/* Signs a checkpoint at entry SEQ of TENANT (whose hash is HASH), unless
 * there is one. */
int audit_checkpoint_at(relay_db *db, const char *tenant, int64_t seq, const char *hash);
/* Signs the head of every tenant whose head moved since its last
 * checkpoint (the timer, and shutdown). */
void audit_checkpoint_due(relay_db *db);
/* Forgets the heads the appender remembers (at stop). */
void audit_head_cache_free(void);
/* Verifies TENANT's chain in the database from the start; fills R. */
int audit_verify_chain(relay_db *db, const char *tenant, audit_verify_result *r);

/* ------------------------------------------------------------ capture.c */

int audit_capture_register(relay_plugin *p);
/* [audit] max_pending and checkpoint_every, read at start and reload. */
void audit_read_limits(relay_plugin *p);
extern int64_t audit_checkpoint_every;
int audit_capture_start(relay_plugin *p);
void audit_capture_stop(relay_plugin *p);

/* ------------------------------------------------------------ stream.c */

int audit_stream_register(relay_plugin *p);
/* Control thread: publishes entries appended since the last call. */
void audit_stream_publish(relay_db *db, bool all_tenants);
void audit_stream_mark(const char *tenant);
void audit_stream_free(void);

/* ------------------------------------------------------------ routes */

/* Is T an event type or a pattern the filters take ("record.synced",
 * "record.*", "*")? */
bool audit_type_pattern_ok(const char *t);
/* GET /v1/audit, /v1/audit/events and events/:id, key, verify */
int audit_routes_register(relay_plugin *p);
int audit_bundles_register(relay_plugin *p); /* the evidence bundle routes */
/* {"valid","entries","redacted","checkpoints","first_bad","message","key_id"} */
json_t *audit_verify_json(const audit_verify_result *v);
/* An entry as the API shows it: its hashed body plus "hash" and
 * "prev_hash", as JSON text (malloc'd). */
char *audit_entry_text(const char *body, const char *prev_hash, const char *hash);

/* ------------------------------------------------------------ bundle.c */

/* A growing byte buffer. */
typedef struct buf_t {
        char *data;
        size_t len, cap;
} buf_t;
void buf_add(buf_t *b, const void *data, size_t len);

/* Builds the tar.gz of TENANT's entries with time in [FROM, TO] (ms).
 * COMPONENTS NULL: all; else entries outside them are redacted to their
 * hashes.  On success OUT and LEN hold malloc'd bytes and SUMMARY the
 * counts; RELAY_ERR (with ERR) when the range is too large. */
int audit_bundle_build(relay_db *db, const char *bundle_id, const char *tenant, int64_t from, int64_t to,
                       json_t *components, unsigned char **out, size_t *len, json_t **summary, char *err,
                       size_t err_len);

extern const relay_migration audit_migrations[];

#endif
