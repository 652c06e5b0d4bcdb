/* records.h - the records plugin's parts: the record model (fields,
 * validation, JSON shape, causal tokens), the change logic every write
 * goes through (apply.c), and the routes. */
#ifndef RELAY_RECORDS_H
#define RELAY_RECORDS_H

#include <stdbool.h>
#include <relay/plugin.h>
#include "records_api.h"

extern const relay_migration records_migrations[];

/* The plugin, for its configuration (set in init). */
extern relay_plugin *records_self;

#define RECORD_ID_LEN 31 /* "rec_" + 26 + NUL */
#define CAUSAL_LEN 27    /* 26 + NUL */

/* ------------------------------------------------------------------ model */

/* The columns every record query selects, in this order. */
#define RECORD_COLUMNS                                                                                           \
        "id, title, type, site, status, payload, causal, size, created_ms, updated_ms, deleted_ms, change_seq, " \
        "updated_by"
/* Positions in RECORD_COLUMNS read outside model.c's record_fields. */
#define RECORD_COL_DELETED_MS 10
#define RECORD_COL_CHANGE_SEQ 11

/* The record's JSON shape, column by column, and the record at R's
 * current row as the API shows it. */
extern const relay_row_field record_fields[];
json_t *record_json(relay_db_result *r);
/* Is S a record id ("rec_" + 26 Crockford base32 characters)? */
bool record_id_valid(const char *s);
bool record_status_valid(const char *s);
/* Is S shaped like a causal token (26 Crockford base32, a ULID)? */
bool causal_valid(const char *s);
/* Checks a create body or a patch; adds failures to *ERRORS. */
void record_validate(const json_t *fields, bool patch, json_t **errors);
/* The next causal token after PREV (NULL for a new record): ULID-like,
 * sortable, always greater than PREV. */
void causal_next(const char *prev, char out[CAUSAL_LEN]);
/* RFC 7396 JSON merge patch of PATCH onto TARGET (modified in place). */
void json_merge_patch(json_t *target, const json_t *patch);
/* A request's identity for Idempotency-Key: the change, canonically. */
void change_fingerprint(const records_change *c, char out[65]);
/* {"code","message"} plus EXTRA members (stolen, may be NULL). */
json_t *error_body(const char *code, const char *message, json_t *extra);

/* ------------------------------------------------------------------ apply */

int records_apply(relay_db *db, const char *tenant, const records_change *c, records_result *out);
void records_result_clear(records_result *r);
int records_changes(relay_db *db, const char *tenant, int64_t after_seq, int limit, records_change_row *rows, int *n);
int records_mark_synced(relay_db *db, const char *tenant, const char *id, const char *causal, bool *changed);

/* ----------------------------------------------------------------- routes */

int records_read_register(relay_plugin *p);
int records_write_register(relay_plugin *p);

#endif
