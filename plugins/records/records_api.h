/* records_api.h - the records plugin's service ("records", version 1),
 * for plugins that change or read records without HTTP: the sync plugin's
 * batch push and change feed.  Get it with
 *   relay_service_get(p, RECORDS_SERVICE, RECORDS_SERVICE_VERSION)
 * after listing "records" in the descriptor's .requires. */
#ifndef RELAY_RECORDS_API_H
#define RELAY_RECORDS_API_H

#include <stdbool.h>
#include <relay/plugin.h>

#define RECORDS_SERVICE "records"
#define RECORDS_SERVICE_VERSION 1

typedef enum { RECORDS_CREATE = 0, RECORDS_UPDATE = 1, RECORDS_DELETE = 2 } records_op;

/* One change, as a route or a batch item carries it. */
typedef struct records_change {
        records_op op;
        const char *id;       /* update, delete; optional for create (a client-made rec_ id) */
        const char *causal;   /* update (required), delete (optional): the version the client saw */
        json_t *fields;       /* create: the record's fields; update: the patch; delete: NULL (borrowed) */
        const char *idem_key; /* Idempotency-Key, or NULL */
        const char *actor;    /* who asks (principal subject), for the record's updated_by */
} records_change;

typedef enum {
        RECORDS_APPLIED = 0,  /* done: BODY is the record */
        RECORDS_REPLAYED = 1, /* the key was used before for the same change: BODY is the first answer */
        RECORDS_CONFLICT = 2, /* causal token is not the current one, or the id exists: BODY has "current" */
        RECORDS_INVALID = 3,  /* bad fields, missing causal, unknown record, key reused or in flight */
        RECORDS_FAILED = 4    /* storage failed: roll back, answer with relay_db_reply_error(rc) */
} records_outcome;

typedef struct records_result {
        records_outcome outcome;
        int status;       /* what the single-change route answers: 201, 200, 409, 404, 422... */
        json_t *body;     /* the record, or the error object {"code","message",...} */
        relay_idem *idem; /* held until the caller's transaction ends */
} records_result;

/* A page of the change feed: records (tombstones included) whose last
 * change is after AFTER_SEQ, in commit order.  Each row: seq, record. */
typedef struct records_change_row {
        int64_t seq;
        json_t *record; /* the record as GET shows it */
} records_change_row;

typedef struct records_api {
        uint32_t size; /* sizeof(records_api) */
        /* Applies C for TENANT in DB's open transaction; run it in a
         * savepoint of its own and roll that back when it fails.  Returns a
         * relay_db_status; OUT says what happened.  Release OUT with
         * result_clear() after the transaction ends. */
        int (*apply)(relay_db *db, const char *tenant, const records_change *c, records_result *out);
        void (*result_clear)(records_result *r);
        /* Up to LIMIT rows after AFTER_SEQ into ROWS (caller's array); *N
         * receives the count.  Free each row's record. */
        int (*changes)(relay_db *db, const char *tenant, int64_t after_seq, int limit, records_change_row *rows,
                       int *n);
        /* The sync queue finished the version CAUSAL of record ID: marks it
         * synced (when still that version) and emits record.synced. */
        int (*mark_synced)(relay_db *db, const char *tenant, const char *id, const char *causal, bool *changed);
} records_api;

#endif
