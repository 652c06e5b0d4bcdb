/* worker.c - worker threads.  Each runs its own loop with its own copy of
 * every listening socket (SO_REUSEPORT: the kernel spreads connections), so
 * workers share nothing on the request path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "daemon.h"
#include "log.h"
#include "publish.h"
#include "relay/util.h"
#include "server.h"
#include "settings.h"
#include "storage.h"
#include "worker.h"

#define SWEEP_MS 250

static void on_connection(uv_stream_t *server, int status)
{
        worker *w = server->data;
        if (status < 0) {
                log_warn("accept: %s", uv_strerror(status));
                return;
        }
        conn_accept(w, server);
}

static void on_sweep(uv_timer_t *t)
{
        worker *w = t->data;
        conn_sweep(w, uv_now(&w->loop));
}

/* Right before the loop waits for I/O: what this turn read ends here
 * (docs/storage.md, "Shared reads"). */
static void on_idle(uv_prepare_t *h)
{
        worker *w = h->data;
        storage_idle(w->db);
}

static void close_walk(uv_handle_t *h, void *arg)
{
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

/* Stops when draining and the last connection has closed. */
static void maybe_finish(worker *w)
{
        if (!w->draining || w->conns)
                return;
        uv_timer_stop(&w->sweep);
        uv_walk(&w->loop, close_walk, NULL);
}

static void on_sweep_drain(uv_timer_t *t)
{
        worker *w = t->data;
        conn_sweep(w, uv_now(&w->loop));
        maybe_finish(w);
}

static void on_wake(uv_async_t *a)
{
        worker *w = a->data;
        int flags = __atomic_exchange_n(&w->wake_flags, 0, __ATOMIC_ACQ_REL);
        if (flags & WAKE_PUBLISH)
                publish_drain(w);
        if ((flags & WAKE_DRAIN) && !w->draining) {
                w->draining = true;
                for (size_t i = 0; i < w->n_listeners; i++)
                        uv_close((uv_handle_t *)&w->listeners[i], NULL);
                for (conn *c = w->conns, *next; c; c = next) {
                        next = c->next;
                        conn_drain(c);
                }
                uv_timer_stop(&w->sweep);
                uv_timer_start(&w->sweep, on_sweep_drain, 50, 50);
        }
        if (flags & WAKE_FORCE) {
                w->draining = true;
                for (conn *c = w->conns, *next; c; c = next) {
                        next = c->next;
                        conn_close(c);
                }
        }
        maybe_finish(w);
}

static void worker_main(void *arg)
{
        worker *w = arg;
        uv_run(&w->loop, UV_RUN_DEFAULT);
        /* Requests parked in the pool go with the loop. */
        while (w->free_reqs) {
                relay_req *r = w->free_reqs;
                w->free_reqs = r->next_free;
                buf_free(&r->scratch), buf_free(&r->body), buf_free(&r->out_headers);
                arena_free(&r->mem);
                free(r);
        }
        storage_db_free(w->db); /* on its own thread, as it was used */
        w->db = NULL;
        server_worker_exited();
}

int worker_start(worker *w, int index, const int *fds, size_t n_fds, char *err, size_t err_len)
{
        settings *s = settings_current();
        w->index = index;
        relay_random(&w->id_prefix, sizeof(w->id_prefix));
        if (uv_loop_init(&w->loop) != 0 || metrics_init(&w->metrics, router_count(relay_daemon.router)) != 0) {
                snprintf(err, err_len, "cannot set up worker %d", index);
                return -1;
        }
        w->listeners = calloc(n_fds, sizeof(uv_tcp_t));
        if (!w->listeners) {
                snprintf(err, err_len, "out of memory");
                return -1;
        }
        for (size_t i = 0; i < n_fds; i++) {
                uv_tcp_t *l = &w->listeners[i];
                uv_tcp_init(&w->loop, l);
                l->data = w;
                int rc = uv_tcp_open(l, fds[i]);
                if (rc == 0)
                        rc = uv_listen((uv_stream_t *)l, s->backlog, on_connection);
                w->n_listeners++;
                if (rc != 0) {
                        snprintf(err, err_len, "listen: %s", uv_strerror(rc));
                        return -1;
                }
        }
        publish_worker_init(w);
        uv_async_init(&w->loop, &w->wake, on_wake);
        w->wake.data = w;
        uv_timer_init(&w->loop, &w->sweep);
        w->sweep.data = w;
        uv_timer_start(&w->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
        uv_prepare_init(&w->loop, &w->idle);
        w->idle.data = w;
        uv_prepare_start(&w->idle, on_idle);
        if (uv_thread_create(&w->thread, worker_main, w) != 0) {
                snprintf(err, err_len, "cannot start worker thread %d", index);
                return -1;
        }
        return 0;
}

void worker_wake(worker *w, int flag)
{
        __atomic_or_fetch(&w->wake_flags, flag, __ATOMIC_ACQ_REL);
        uv_async_send(&w->wake);
}

void worker_join(worker *w) { uv_thread_join(&w->thread); }

void worker_free(worker *w)
{
        uv_loop_close(&w->loop);
        publish_worker_free(w);
        metrics_free(&w->metrics);
        free(w->listeners);
        buf_free(&w->reply);
        free(w->health_body);
        free(w);
}

const char *worker_date_header(worker *w)
{
        time_t now = time(NULL);
        if (now != w->date_sec) {
                struct tm tm;
                gmtime_r(&now, &tm);
                strftime(w->date, sizeof(w->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
                w->date_sec = now;
        }
        return w->date;
}

void worker_conn_link(worker *w, conn *c)
{
        c->prev = NULL;
        c->next = w->conns;
        if (w->conns)
                w->conns->prev = c;
        w->conns = c;
        w->n_conns++;
}

void worker_conn_unlink(worker *w, conn *c)
{
        if (c->prev)
                c->prev->next = c->next;
        else
                w->conns = c->next;
        if (c->next)
                c->next->prev = c->prev;
        w->n_conns--;
        maybe_finish(w);
}
