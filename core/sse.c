/* sse.c - Server-Sent Events over a chunked (HTTP/1.1) or close-delimited
 * (HTTP/1.0) response, with a bound on what a slow reader may leave unsent. */
#include <stdio.h>
#include <string.h>
#include "daemon.h"
#include "http.h"
#include "log.h"
#include "publish.h"
#include "settings.h"
#include "worker.h"

/* Messages handed over in one publish drain are written together, up to
 * this many bytes per stream. */
#define SSE_BATCH_BYTES 65536

RELAY_API relay_sse *relay_sse_start(relay_req *req)
{
        conn *c = req->c;
        if (req->replied || req->sse.open || !c || c->gone)
                return NULL;
        relay_sse *sse = &req->sse;
        sse->req = req;
        sse->chunked = c->parser.http_major == 1 && c->parser.http_minor >= 1;
        if (!sse->chunked)
                c->close_after = true; /* the end of the stream is the end of the connection */
        relay_set_header(req, "Cache-Control", "no-cache");
        relay_set_header(req, "X-Accel-Buffering", "no");
        response_head(req, 200, "text/event-stream", sse->chunked ? -1 : -2);
        sse->open = true;
        sse->last_send = uv_now(&c->w->loop);
        c->state = CONN_STREAMING;
        c->deadline = 0;
        req->async = true;
        conn_flush(c);
        return c->gone ? NULL : sse;
}

/* Queues one chunk; cuts the client off when too much is unsent. */
static int sse_write(relay_sse *sse, const char *data, size_t len)
{
        if (!sse || !sse->open)
                return RELAY_ERR;
        conn *c = sse->req->c;
        /* The bound is on what waits behind unread data: a message larger
         * than the buffer still goes out on a connection that has caught
         * up, else one big message would cut off every stream forever. */
        size_t waiting = c->write_queued + c->out.len;
        if (waiting > 0 && waiting + len > settings_current()->stream_buffer) {
                relay_req_log(
                        sse->req, RELAY_LOG_WARN,
                        "SSE client not reading: cut off (%zu bytes would be unsent; [limits] stream_buffer is %llu)",
                        waiting + len, (unsigned long long)settings_current()->stream_buffer);
                conn_close(c);
                return RELAY_ERR;
        }
        if (sse->chunked)
                buf_printf(&c->out, "%zx\r\n", len);
        buf_append(&c->out, data, len);
        if (sse->chunked)
                buf_append(&c->out, "\r\n", 2);
        sse->req->bytes_out += len;
        sse->last_send = uv_now(&c->w->loop);
        if (c->w->pub_draining && c->out.len < SSE_BATCH_BYTES)
                c->flush_later = true; /* one write for the drain's messages (publish.c) */
        else
                conn_flush(c);
        return sse->open ? RELAY_OK : RELAY_ERR;
}

void sse_format(buf *b, const char *event, const char *id, const char *data)
{
        if (event && !strpbrk(event, "\r\n"))
                buf_printf(b, "event: %s\n", event);
        if (id && !strpbrk(id, "\r\n"))
                buf_printf(b, "id: %s\n", id);
        const char *p = data ? data : "";
        do { /* one data: line per line of DATA */
                size_t n = strcspn(p, "\n");
                buf_puts(b, "data: ");
                buf_append(b, p, n);
                buf_append(b, "\n", 1);
                p += n;
        } while (*p++ == '\n');
        buf_append(b, "\n", 1);
}

int sse_send_frame(relay_sse *sse, const char *frame, size_t len) { return sse_write(sse, frame, len); }

RELAY_API int relay_sse_send(relay_sse *sse, const char *event, const char *id, const char *data)
{
        if (!sse || !sse->open)
                return RELAY_ERR;
        buf b = {0};
        sse_format(&b, event, id, data);
        int rc = b.data ? sse_write(sse, b.data, b.len) : RELAY_ERR;
        buf_free(&b);
        return rc;
}

RELAY_API int relay_sse_comment(relay_sse *sse, const char *text)
{
        char line[256];
        int n = snprintf(line, sizeof(line), ": %.200s\n\n", text ? text : "");
        for (int i = 2; i < n - 2; i++)
                if (line[i] == '\n' || line[i] == '\r')
                        line[i] = ' ';
        return sse_write(sse, line, (size_t)n);
}

RELAY_API void relay_sse_on_close(relay_sse *sse, relay_sse_close_fn fn, void *data)
{
        if (!sse)
                return;
        sse->on_close = fn;
        sse->on_close_data = data;
}

RELAY_API relay_req *relay_sse_req(relay_sse *sse) { return sse ? sse->req : NULL; }

/* The connection is going away: tell the plugin, once. */
void sse_closed(relay_sse *sse)
{
        if (!sse->open)
                return;
        sse->open = false;
        publish_sse_closed(sse);
        if (sse->on_close)
                sse->on_close(sse, sse->on_close_data);
}

RELAY_API void relay_sse_end(relay_sse *sse)
{
        if (!sse || !sse->open)
                return;
        relay_req *req = sse->req;
        conn *c = req->c;
        if (sse->chunked)
                buf_puts(&c->out, "0\r\n\r\n");
        sse_closed(sse);
        req->async = false;
        if (req->in_handler)
                return; /* ended before the handler returned: it finishes as a plain reply */
        req_finish(req);
        conn_request_done(c);
}

void sse_heartbeat(relay_sse *sse, uint64_t now, uint64_t interval)
{
        if (sse->open && now - sse->last_send >= interval)
                relay_sse_comment(sse, "keep-alive");
}
