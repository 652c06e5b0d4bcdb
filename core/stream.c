/* stream.c - extra TCP listeners for plugins that speak something other
 * than HTTP (relay/stream.h).  They run on the control loop. */
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "log.h"
#include "net_addr.h"

typedef struct listener {
        uv_tcp_t tcp;
        relay_plugin *plugin;
        relay_stream_cbs cbs;
        void *data;
} listener;

struct relay_stream {
        uv_tcp_t tcp;
        listener *l;
        void *data;
        char peer[64];
        bool closing;
};

typedef struct stream_write {
        uv_write_t req;
        char bytes[];
} stream_write;

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
        static char buffer[65536]; /* the control thread alone reads here */
        *b = uv_buf_init(buffer, sizeof(buffer));
}

static void on_stream_close(uv_handle_t *h)
{
        relay_stream *s = h->data;
        if (s->l->cbs.on_close)
                s->l->cbs.on_close(s);
        free(s);
}

RELAY_API void relay_stream_close(relay_stream *s)
{
        if (!s || s->closing)
                return;
        s->closing = true;
        uv_close((uv_handle_t *)&s->tcp, on_stream_close);
}

static void on_stream_read(uv_stream_t *h, ssize_t n, const uv_buf_t *b)
{
        relay_stream *s = h->data;
        if (n < 0) {
                relay_stream_close(s);
                return;
        }
        if (n > 0 && s->l->cbs.on_data)
                s->l->cbs.on_data(s, b->base, (size_t)n);
}

static void on_stream_connection(uv_stream_t *server, int status)
{
        listener *l = server->data;
        if (status < 0)
                return;
        relay_stream *s = calloc(1, sizeof(*s));
        if (!s)
                return;
        s->l = l;
        uv_tcp_init(relay_daemon.loop, &s->tcp);
        s->tcp.data = s;
        if (uv_accept(server, (uv_stream_t *)&s->tcp) != 0) {
                uv_close((uv_handle_t *)&s->tcp, (uv_close_cb)free);
                return;
        }
        struct sockaddr_storage ss;
        int len = sizeof(ss);
        if (uv_tcp_getpeername(&s->tcp, (struct sockaddr *)&ss, &len) == 0)
                net_addr_ip((struct sockaddr *)&ss, s->peer, sizeof(s->peer));
        if (l->cbs.on_open)
                l->cbs.on_open(s);
        if (!s->closing)
                uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_stream_read);
}

RELAY_API int relay_listen(relay_plugin *p, const char *addr, const relay_stream_cbs *cbs, void *data)
{
        struct sockaddr_storage ss;
        if (!cbs || cbs->size < offsetof(relay_stream_cbs, reserved) || net_addr_parse(addr, &ss) != 0) {
                log_write(RELAY_LOG_ERROR, relay_plugin_name(p), NULL, "relay_listen: bad address '%s'", addr);
                return RELAY_ERR;
        }
        listener *l = calloc(1, sizeof(*l));
        if (!l)
                return RELAY_ERR;
        l->plugin = p;
        memcpy(&l->cbs, cbs, sizeof(l->cbs));
        l->data = data;
        uv_tcp_init(relay_daemon.loop, &l->tcp);
        l->tcp.data = l;
        int rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0);
        if (rc == 0)
                rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_stream_connection);
        if (rc != 0) {
                log_write(RELAY_LOG_ERROR, relay_plugin_name(p), NULL, "cannot listen on %s: %s", addr,
                          uv_strerror(rc));
                uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)free);
                return RELAY_ERR;
        }
        int len = sizeof(ss);
        uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
        char bound[80];
        net_addr_format((struct sockaddr *)&ss, bound, sizeof(bound));
        log_write(RELAY_LOG_INFO, relay_plugin_name(p), NULL, "listening on %s (tcp)", bound);
        return ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                        : ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void on_stream_write(uv_write_t *w, int status) { free(w); }

RELAY_API int relay_stream_write(relay_stream *s, const void *data, size_t len)
{
        if (!s || s->closing)
                return RELAY_ERR;
        stream_write *w = malloc(sizeof(*w) + len);
        if (!w)
                return RELAY_ERR;
        memcpy(w->bytes, data, len);
        uv_buf_t b = uv_buf_init(w->bytes, (unsigned)len);
        if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_stream_write) != 0) {
                free(w);
                return RELAY_ERR;
        }
        return RELAY_OK;
}

RELAY_API void *relay_stream_listener_data(relay_stream *s) { return s->l->data; }
RELAY_API void relay_stream_set_data(relay_stream *s, void *data) { s->data = data; }
RELAY_API void *relay_stream_data(relay_stream *s) { return s->data; }
RELAY_API const char *relay_stream_peer_ip(relay_stream *s) { return s->peer; }
RELAY_API relay_plugin *relay_stream_plugin(relay_stream *s) { return s->l->plugin; }
