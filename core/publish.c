/* publish.c - relay_publish(): one message to every subscribed SSE stream
 * of this daemon, whatever worker owns it.
 *
 * A message is copied once and reference-counted.  relay_publish() queues
 * a pointer on each worker's inbox (a mutex-protected list, bounded by
 * [limits] publish_backlog) and wakes the worker; the worker drains its
 * inbox on its own thread and hands each message to the streams that
 * subscribed to the channel.  Streams are only ever touched by their own
 * worker, so nothing else needs a lock. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "publish.h"
#include "settings.h"
#include "worker.h"

#define PUB_MAGIC 0x50554253u /* "PUBS": M belongs to a pub_msg */

typedef struct pub_msg {
        int refs; /* atomic: one per worker inbox holding it */
        uint32_t magic;
        char *frame; /* the event's wire form, formatted once for every stream */
        size_t frame_len;
        relay_message m;
        char text[]; /* channel, event, id and data, each NUL-terminated */
} pub_msg;

typedef struct pub_item {
        struct pub_item *next;
        pub_msg *msg;
} pub_item;

/* One subscription of one stream; lives on the stream's worker. */
struct sse_sub {
        struct sse_sub *next;    /* in the worker's list */
        struct sse_sub *next_of; /* in the stream's list */
        relay_sse *sse;          /* NULL once the stream closed: freed after the drain */
        char *channel;
        relay_message_fn fn;
        void *data;
};

static int64_t dropped_total; /* atomic */

static void msg_unref(pub_msg *m)
{
        if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
                free(m->frame);
                free(m);
        }
}

static char *put(char **at, const char *s)
{
        if (!s)
                return NULL;
        size_t n = strlen(s) + 1;
        char *dst = *at;
        memcpy(dst, s, n);
        *at += n;
        return dst;
}

static pub_msg *msg_copy(const relay_message *m)
{
        size_t need = 0;
        const char *parts[] = {m->channel, m->event, m->id, m->data};
        for (size_t i = 0; i < 4; i++)
                need += parts[i] ? strlen(parts[i]) + 1 : 0;
        pub_msg *pm = malloc(sizeof(*pm) + need);
        if (!pm)
                return NULL;
        char *at = pm->text;
        pm->refs = 0;
        pm->magic = PUB_MAGIC;
        pm->m = (relay_message){.size = sizeof(relay_message), .seq = m->seq};
        pm->m.channel = put(&at, m->channel);
        pm->m.event = put(&at, m->event);
        pm->m.id = put(&at, m->id);
        pm->m.data = put(&at, m->data);
        buf frame = {0};
        sse_format(&frame, pm->m.event, pm->m.id, pm->m.data);
        if (!frame.data) {
                free(pm);
                return NULL;
        }
        pm->frame = frame.data;
        pm->frame_len = frame.len;
        return pm;
}

void publish_worker_init(worker *w) { uv_mutex_init(&w->pub_lock); }

static void inbox_push(worker *w, pub_msg *pm, size_t cap)
{
        pub_item *it = malloc(sizeof(*it));
        if (!it)
                return;
        it->next = NULL;
        it->msg = pm;
        __atomic_add_fetch(&pm->refs, 1, __ATOMIC_ACQ_REL);
        pub_item *old = NULL;
        uv_mutex_lock(&w->pub_lock);
        if (w->pub_n >= cap && w->pub_head) { /* a stalled worker keeps the newest, not all */
                old = w->pub_head;
                w->pub_head = old->next;
                if (!w->pub_head)
                        w->pub_tail = NULL;
                w->pub_n--;
        }
        if (w->pub_tail)
                w->pub_tail->next = it;
        else
                w->pub_head = it;
        w->pub_tail = it;
        w->pub_n++;
        uv_mutex_unlock(&w->pub_lock);
        if (old) {
                __atomic_add_fetch(&dropped_total, 1, __ATOMIC_RELAXED);
                msg_unref(old->msg);
                free(old);
        }
}

RELAY_API int relay_publish(const relay_message *m)
{
        if (!m || m->size < sizeof(relay_message) || !m->channel)
                return RELAY_ERR;
        pub_msg *pm = msg_copy(m);
        if (!pm)
                return RELAY_ERR;
        size_t cap = settings_current()->publish_backlog;
        pm->refs = 1; /* ours until every inbox has it */
        for (size_t i = 0; i < relay_daemon.n_workers; i++) {
                worker *w = relay_daemon.workers[i];
                if (!w || !w->pub_subs_any)
                        continue; /* no stream subscribed there: nothing to wake it for */
                inbox_push(w, pm, cap ? cap : 1);
                worker_wake(w, WAKE_PUBLISH);
        }
        msg_unref(pm);
        return RELAY_OK;
}

int64_t publish_dropped_total(void) { return __atomic_load_n(&dropped_total, __ATOMIC_RELAXED); }

RELAY_API int relay_sse_subscribe(relay_sse *sse, const char *channel, relay_message_fn fn, void *data)
{
        if (!sse || !sse->open || !channel)
                return RELAY_ERR;
        worker *w = sse->req->w;
        sse_sub *s = calloc(1, sizeof(*s));
        if (!s || !(s->channel = strdup(channel))) {
                free(s);
                return RELAY_ERR;
        }
        s->sse = sse;
        s->fn = fn;
        s->data = data;
        s->next = w->pub_subs;
        w->pub_subs = s;
        s->next_of = sse->subs;
        sse->subs = s;
        __atomic_store_n(&w->pub_subs_any, true, __ATOMIC_RELEASE);
        return RELAY_OK;
}

/* Frees subscriptions whose stream is gone.  Not during a drain: the
 * drain's walk may be holding one of them. */
static void sweep_subs(worker *w)
{
        sse_sub **pp = &w->pub_subs;
        while (*pp) {
                sse_sub *s = *pp;
                if (s->sse) {
                        pp = &s->next;
                        continue;
                }
                *pp = s->next;
                free(s->channel);
                free(s);
        }
        if (!w->pub_subs)
                __atomic_store_n(&w->pub_subs_any, false, __ATOMIC_RELEASE);
}

void publish_sse_closed(relay_sse *sse)
{
        for (sse_sub *s = sse->subs; s; s = s->next_of)
                s->sse = NULL;
        sse->subs = NULL;
        worker *w = sse->req ? sse->req->w : NULL;
        if (w && !w->pub_draining)
                sweep_subs(w);
}

static void deliver(worker *w, const relay_message *m)
{
        for (sse_sub *s = w->pub_subs; s; s = s->next) {
                if (!s->sse || strcmp(s->channel, m->channel) != 0)
                        continue;
                if (s->fn)
                        s->fn(s->sse, m, s->data);
                else
                        relay_sse_forward(s->sse, m);
        }
}

RELAY_API int relay_sse_forward(relay_sse *sse, const relay_message *m)
{
        if (!m)
                return RELAY_ERR;
        const pub_msg *pm = (const pub_msg *)((const char *)m - offsetof(pub_msg, m));
        if (m->size == sizeof(relay_message) && pm->magic == PUB_MAGIC && pm->frame)
                return sse && sse->open ? sse_send_frame(sse, pm->frame, pm->frame_len) : RELAY_ERR;
        return relay_sse_send(sse, m->event, m->id, m->data);
}

/* Writes what the drain queued on each stream, once per stream. */
static void flush_streams(worker *w)
{
        for (sse_sub *s = w->pub_subs; s; s = s->next) {
                conn *c = s->sse && s->sse->req ? s->sse->req->c : NULL;
                if (c && c->flush_later) {
                        c->flush_later = false;
                        conn_flush(c);
                }
        }
}

void publish_drain(worker *w)
{
        uv_mutex_lock(&w->pub_lock);
        pub_item *it = w->pub_head;
        w->pub_head = w->pub_tail = NULL;
        w->pub_n = 0;
        uv_mutex_unlock(&w->pub_lock);
        w->pub_draining = true;
        while (it) {
                pub_item *next = it->next;
                deliver(w, &it->msg->m);
                msg_unref(it->msg);
                free(it);
                it = next;
        }
        w->pub_draining = false;
        flush_streams(w);
        sweep_subs(w);
}

void publish_worker_free(worker *w)
{
        for (pub_item *it = w->pub_head, *next; it; it = next) {
                next = it->next;
                msg_unref(it->msg);
                free(it);
        }
        w->pub_head = w->pub_tail = NULL;
        for (sse_sub *s = w->pub_subs, *next; s; s = next) {
                next = s->next;
                free(s->channel);
                free(s);
        }
        w->pub_subs = NULL;
        uv_mutex_destroy(&w->pub_lock);
}
