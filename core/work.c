/* work.c - timers and thread-pool work for plugins (relay/plugin.h). */
#include <stdlib.h>
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "worker.h"

struct relay_timer {
        uv_timer_t handle;
        relay_plugin *plugin;
        relay_timer_cb cb;
        void *data;
};

static void on_timer(uv_timer_t *h)
{
        relay_timer *t = h->data;
        t->cb(t->plugin, t->data);
}

RELAY_API relay_timer *relay_timer_start(relay_plugin *p, uint64_t first_ms, uint64_t repeat_ms, relay_timer_cb cb,
                                         void *data)
{
        relay_timer *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        t->plugin = p;
        t->cb = cb;
        t->data = data;
        uv_timer_init(relay_daemon.loop, &t->handle);
        t->handle.data = t;
        uv_timer_start(&t->handle, on_timer, first_ms, repeat_ms);
        return t;
}

RELAY_API void relay_timer_stop(relay_timer *t)
{
        if (!t)
                return;
        uv_timer_stop(&t->handle);
        uv_close((uv_handle_t *)&t->handle, (uv_close_cb)free);
}

/* ------------------------------------------------------- work for a request */

typedef struct req_work {
        uv_work_t w;
        relay_req *req;
        relay_work_fn work;
        relay_work_done_fn done;
        void *data;
} req_work;

static void run_work(uv_work_t *w)
{
        req_work *rw = (req_work *)w;
        rw->work(rw->data);
}

static void after_req_work(uv_work_t *w, int status)
{
        req_work *rw = (req_work *)w;
        relay_req *req = rw->req;
        req->work_pending = false;
        int rc = rw->done(req, rw->data);
        free(rw);
        req_resume(req, rc);
}

void req_resume(relay_req *req, int rc)
{
        conn *c = req->c;
        if (rc == RELAY_ASYNC && !req->replied && (req->work_pending || req->sse.open)) {
                conn_unref(c); /* the next step holds its own reference */
                return;
        }
        if (!req->replied) {
                relay_req_log(req, RELAY_LOG_ERROR, "work finished without a reply");
                relay_error(req, 500, "internal", "internal error");
        }
        req->async = false;
        req_finish(req);
        conn_request_done(c);
        conn_unref(c);
}

RELAY_API int relay_work(relay_req *req, relay_work_fn work, relay_work_done_fn done, void *data)
{
        if (!req || !req->c || req->replied || req->work_pending || !work || !done)
                return RELAY_ERR;
        req_work *rw = calloc(1, sizeof(*rw));
        if (!rw)
                return RELAY_ERR;
        rw->req = req;
        rw->work = work;
        rw->done = done;
        rw->data = data;
        if (uv_queue_work(&req->w->loop, &rw->w, run_work, after_req_work) != 0) {
                free(rw);
                return RELAY_ERR;
        }
        req->work_pending = true;
        req->async = true;
        conn_ref(req->c);
        return RELAY_OK;
}

/* --------------------------------------------------- work for a plugin */

typedef struct plugin_work {
        uv_work_t w;
        relay_plugin *plugin;
        relay_work_fn work;
        relay_plugin_work_done_fn done;
        void *data;
} plugin_work;

static void run_plugin_work(uv_work_t *w)
{
        plugin_work *pw = (plugin_work *)w;
        pw->work(pw->data);
}

static void after_plugin_work(uv_work_t *w, int status)
{
        plugin_work *pw = (plugin_work *)w;
        if (pw->done)
                pw->done(pw->plugin, pw->data);
        free(pw);
}

RELAY_API int relay_plugin_work(relay_plugin *p, relay_work_fn work, relay_plugin_work_done_fn done, void *data)
{
        plugin_work *pw = calloc(1, sizeof(*pw));
        if (!pw || !work) {
                free(pw);
                return RELAY_ERR;
        }
        pw->plugin = p;
        pw->work = work;
        pw->done = done;
        pw->data = data;
        if (uv_queue_work(relay_daemon.loop, &pw->w, run_plugin_work, after_plugin_work) != 0) {
                free(pw);
                return RELAY_ERR;
        }
        return RELAY_OK;
}
