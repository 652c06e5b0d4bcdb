/* relay/events.h - the transactional outbox.
 *
 * A plugin emits an event with the connection it is changing data with,
 * inside the same transaction: the event exists exactly when the change
 * does.  After commit, subscribers receive events in commit order (so in
 * order per tenant), at least once: an event committed before a crash is
 * delivered after restart.  Each event has a stable id ("evt_...") for
 * subscribers to drop duplicates. */
#ifndef RELAY_EVENTS_H
#define RELAY_EVENTS_H

#include <stdbool.h>
#include <jansson.h>
#include <relay/common.h>
#include <relay/db.h>

RELAY_BEGIN_DECLS

typedef struct relay_event {
        uint32_t size;      /* sizeof(relay_event) */
        int64_t seq;        /* commit order */
        const char *id;     /* "evt_..." */
        const char *tenant; /* NULL for system events */
        const char *type;   /* "record.synced" */
        json_t *payload;    /* borrowed */
        int64_t created_ms;
} relay_event;

/* Records an event in DB's current transaction (or on its own when there
 * is none).  ID_OUT (may be NULL, 40 bytes) receives the event id.  Steals
 * PAYLOAD. */
RELAY_API int relay_event_emit(relay_db *db, const char *tenant, const char *type, json_t *payload, char *id_out);
/* The same, also giving the event's sequence number in *SEQ_OUT (may be
 * NULL).  Sequence numbers follow commit order on both engines, so a
 * plugin may use SEQ as the position of its change in a feed it serves
 * (the records change feed does).  (ABI 1.1) */
RELAY_API int relay_event_emit_ex(relay_db *db, const char *tenant, const char *type, json_t *payload, char *id_out,
                                  int64_t *seq_out);

/* Returns RELAY_OK once the event is handled; anything else delivers it
 * again later (after [events] retry_delay). */
typedef int (*relay_event_fn)(relay_plugin *p, const relay_event *ev, void *data);

/* Takes the outbox's ordering lock in DB's open transaction now, instead
 * of at the first emit.  A transaction that reads rows, then changes them
 * and emits events, calls it first: writers then queue before they read,
 * so what they read stays current until they commit, and every writer
 * takes its locks in the same order (outbox first, rows after).  On
 * SQLite, whose BEGIN IMMEDIATE already serialises writers, it does
 * nothing.  (ABI 1.1) */
RELAY_API int relay_event_order_lock(relay_db *db);

/* Calls FN on the control thread for each committed event whose type
 * matches PATTERN ("record.*", "*", "record.synced").  NAME identifies the
 * subscription: its position is stored, so a restart resumes where it
 * stopped.  Call in init(). */
RELAY_API int relay_event_subscribe(relay_plugin *p, const char *name, const char *pattern, relay_event_fn fn,
                                    void *data);

/* Have all of this daemon's subscribers handled the events up to SEQ (the
 * sequence number relay_event_emit_ex gave)?  A job that must come after
 * what subscribers do with an event (the sync plugin marks a record synced
 * once webhook deliveries are queued and done) defers until it is true.
 * Control thread only.  (ABI 1.2) */
RELAY_API bool relay_event_settled(int64_t seq);

/* Does TYPE match PATTERN ("a.*" matches "a.b" and "a.b.c"; "*" matches all)? */
RELAY_API int relay_event_matches(const char *pattern, const char *type);

RELAY_END_DECLS
#endif
