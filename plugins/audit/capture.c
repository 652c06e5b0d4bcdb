/* capture.c - what becomes an audit entry.
 *
 * Events: a subscriber to every event ("*") appends one entry per event
 * inside the dispatcher's transaction, so the entry and the subscriber's
 * position commit together (an event is recorded once, even across a
 * crash; the (tenant, event_id) index catches a second daemon).
 *
 * Authenticated writes: the request hook runs on the worker that answered;
 * it copies who/what/result into a queue, and the control thread appends
 * the queue every [audit] flush_interval, in one transaction.  A crash can
 * lose the writes answered in the last flush_interval; the changes they
 * made are still recorded through their events. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "audit.h"

typedef struct pending {
        struct pending *next;
        char *tenant, *actor, *actor_kind, *role, *credential, *method, *route, *path, *target, *request_id;
        int status;
        int64_t time_ms;
} pending;

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pending *queue_head, **queue_tail = &queue_head;
static int64_t queue_len, dropped;
static relay_timer *flush_timer, *checkpoint_timer;
static int64_t last_full_poll;
static relay_counter *dropped_counter;
static int64_t max_pending;     /* atomic: read by the workers' request hook */
int64_t audit_checkpoint_every; /* control thread */

/* The keys read where they are used often (every write request, every
 * entry): once at start and at each reload, not per use. */
void audit_read_limits(relay_plugin *p)
{
        __atomic_store_n(&max_pending, relay_conf_int(p, "max_pending"), __ATOMIC_RELAXED);
        audit_checkpoint_every = relay_conf_int(p, "checkpoint_every");
}

static const char *str_field(json_t *o, const char *key) { return json_string_value(json_object_get(o, key)); }

/* ------------------------------------------------------------ events */

static int on_event(relay_plugin *p, const relay_event *ev, void *data)
{
        if (!ev->tenant)
                return RELAY_OK; /* system events belong to no tenant's chain */
        json_t *pl = ev->payload;
        const char *actor = str_field(pl, "actor");
        if (!actor)
                actor = str_field(pl, "updated_by");
        if (!actor)
                actor = str_field(pl, "created_by");
        const char *policy = str_field(pl, "policy");
        if (!policy && strncmp(ev->type, "policy.", 7) == 0)
                policy = str_field(pl, "name");
        char when[40];
        json_t *body = json_pack("{s:s,s:s,s:O}", "event_id", ev->id, "event_time",
                                 relay_time_format(ev->created_ms, when, sizeof(when)), "data", pl ? pl : json_null());
        audit_draft d = {.tenant = ev->tenant,
                         .kind = "event",
                         .type = ev->type,
                         .actor = actor,
                         .target = str_field(pl, "id"),
                         .event_id = ev->id,
                         .model = str_field(pl, "model"),
                         .policy = policy,
                         .body = body};
        int rc = audit_append(relay_plugin_db(p), &d);
        json_decref(body);
        if (rc != RELAY_DB_OK)
                relay_log(p, RELAY_LOG_WARN, "cannot record event %s: %s", ev->id, relay_db_errmsg(relay_plugin_db(p)));
        return rc == RELAY_DB_OK ? RELAY_OK : RELAY_ERR;
}

/* ------------------------------------------------------------ requests */

static bool is_write(const char *method)
{
        return method && strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0 && strcmp(method, "OPTIONS") != 0;
}

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

static void pending_free(pending *e)
{
        free(e->tenant), free(e->actor), free(e->actor_kind), free(e->role), free(e->credential);
        free(e->method), free(e->route), free(e->path), free(e->target), free(e->request_id);
        free(e);
}

/* On the worker: copy what the entry needs; the request is about to go. */
static void on_request(relay_plugin *p, relay_req *req, int status, void *data)
{
        const relay_principal *who = relay_principal_of(req);
        if (!who || !who->tenant || !is_write(relay_method(req)))
                return;
        pending *e = calloc(1, sizeof(*e));
        if (!e)
                return;
        const char *target = relay_param(req, "id");
        e->tenant = strdup(who->tenant);
        e->actor = dup_or_null(who->subject);
        e->actor_kind = dup_or_null(who->kind);
        e->role = dup_or_null(who->role);
        e->credential = dup_or_null(who->credential);
        e->method = dup_or_null(relay_method(req));
        e->route = dup_or_null(relay_route_pattern(req));
        e->path = dup_or_null(relay_path(req));
        e->target = dup_or_null(target ? target : relay_param(req, "job"));
        e->request_id = dup_or_null(relay_request_id(req));
        e->status = status;
        e->time_ms = relay_now_ms();
        int64_t cap = __atomic_load_n(&max_pending, __ATOMIC_RELAXED);
        pthread_mutex_lock(&queue_lock);
        bool full = queue_len >= cap;
        if (!full) {
                *queue_tail = e;
                queue_tail = &e->next;
                queue_len++;
        } else {
                dropped++;
        }
        pthread_mutex_unlock(&queue_lock);
        if (full) {
                relay_counter_add(dropped_counter, 1);
                pending_free(e);
        }
}

static int append_request(relay_db *db, const pending *e)
{
        char when[40];
        json_t *body =
                json_pack("{s:s?,s:s?,s:s?,s:s?,s:s?,s:s?,s:i,s:s,s:s?,s:s}", "actor_kind", e->actor_kind, "role",
                          e->role, "credential", e->credential, "method", e->method, "route", e->route, "path", e->path,
                          "status", e->status, "result", e->status < 400 ? "success" : "failure", "request_id",
                          e->request_id, "request_time", relay_time_format(e->time_ms, when, sizeof(when)));
        audit_draft d = {.tenant = e->tenant,
                         .kind = "request",
                         .type = "request",
                         .actor = e->actor,
                         .target = e->target ? e->target : e->path,
                         .body = body};
        int rc = body ? audit_append(db, &d) : RELAY_DB_ERROR;
        json_decref(body);
        return rc;
}

/* Control thread: the queued writes, in one transaction. */
static void flush_requests(relay_db *db)
{
        pthread_mutex_lock(&queue_lock);
        pending *list = queue_head;
        queue_head = NULL;
        queue_tail = &queue_head;
        queue_len = 0;
        pthread_mutex_unlock(&queue_lock);
        if (!list)
                return;
        int rc = relay_db_begin(db);
        for (pending *e = list; rc == RELAY_DB_OK && e; e = e->next)
                rc = append_request(db, e);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK) { /* keep them for the next flush, in front of newer ones */
                relay_log(audit_self, RELAY_LOG_WARN, "cannot record requests yet: %s", relay_db_errmsg(db));
                pending *last = list;
                int64_t n = 1;
                for (; last->next; last = last->next)
                        n++;
                pthread_mutex_lock(&queue_lock);
                last->next = queue_head;
                queue_head = list;
                if (!last->next)
                        queue_tail = &last->next;
                queue_len += n;
                pthread_mutex_unlock(&queue_lock);
                return;
        }
        for (pending *e = list, *next; e; e = next) {
                next = e->next;
                pending_free(e);
        }
}

static void on_flush(relay_plugin *p, void *data)
{
        relay_db *db = relay_plugin_db(p);
        flush_requests(db);
        int64_t now = relay_now_ms();
        bool all = now - last_full_poll >= 500; /* entries other daemons appended */
        if (all)
                last_full_poll = now;
        audit_stream_publish(db, all);
}

static void on_checkpoint(relay_plugin *p, void *data) { audit_checkpoint_due(relay_plugin_db(p)); }

int audit_capture_register(relay_plugin *p)
{
        dropped_counter = relay_counter_new(p, "audit_requests_dropped_total",
                                            "authenticated writes not recorded because the queue was full");
        if (relay_event_subscribe(p, "entries", "*", on_event, NULL) || relay_request_hook(p, on_request, NULL))
                return RELAY_ERR;
        return RELAY_OK;
}

int audit_capture_start(relay_plugin *p)
{
        audit_read_limits(p);
        uint64_t every = relay_conf_duration_ms(p, "flush_interval");
        flush_timer = relay_timer_start(p, every, every, on_flush, NULL);
        uint64_t cp = relay_conf_duration_ms(p, "checkpoint_interval");
        checkpoint_timer = relay_timer_start(p, cp, cp, on_checkpoint, NULL);
        return flush_timer && checkpoint_timer ? RELAY_OK : RELAY_ERR;
}

void audit_capture_stop(relay_plugin *p)
{
        relay_timer_stop(flush_timer);
        relay_timer_stop(checkpoint_timer);
        flush_timer = checkpoint_timer = NULL;
        relay_db *db = relay_plugin_db(p);
        if (db) {
                flush_requests(db); /* what was answered before the stop is recorded */
                audit_checkpoint_due(db);
        }
        pthread_mutex_lock(&queue_lock);
        for (pending *e = queue_head, *next; e; e = next) {
                next = e->next;
                pending_free(e);
        }
        queue_head = NULL;
        queue_tail = &queue_head;
        queue_len = 0;
        pthread_mutex_unlock(&queue_lock);
}
