/* relay/sse.h - Server-Sent Events responses.
 *
 * relay_sse_start() answers 200 text/event-stream (chunked) and keeps the
 * connection; the handler returns RELAY_ASYNC.  Sends are buffered up to the
 * daemon's [limits] stream_buffer: a client that does not read is cut off
 * (the close callback runs), so a slow consumer never grows memory without
 * bound.  (A single message larger than the buffer is still sent when
 * nothing else is waiting.)  All calls belong to the worker thread that owns the request. */
#ifndef RELAY_SSE_H
#define RELAY_SSE_H

#include <relay/common.h>

RELAY_BEGIN_DECLS

typedef void (*relay_sse_close_fn)(relay_sse *sse, void *data);

RELAY_API relay_sse *relay_sse_start(relay_req *req);
/* One event.  EVENT and ID may be NULL; DATA may hold newlines.  Returns
 * RELAY_ERR once the stream is closed. */
RELAY_API int relay_sse_send(relay_sse *sse, const char *event, const char *id, const char *data);
/* A comment line (": text"), for heartbeats. */
RELAY_API int relay_sse_comment(relay_sse *sse, const char *text);
/* Called once when the client goes away or the stream is cut off or ended. */
RELAY_API void relay_sse_on_close(relay_sse *sse, relay_sse_close_fn fn, void *data);
/* Ends the stream; the connection may then serve further requests. */
RELAY_API void relay_sse_end(relay_sse *sse);
RELAY_API relay_req *relay_sse_req(relay_sse *sse);

/* ------------------------------------------------------------ fan-out (1.2)
 *
 * relay_publish() hands a message to every stream of this daemon that
 * subscribed to its channel, whatever worker owns the stream.  Call it from
 * any thread (an event subscriber on the control thread, a handler on a
 * worker).  Each worker receives messages in publish order; a worker that
 * falls more than [limits] publish_backlog messages behind drops the
 * oldest and counts them (relay_publish_dropped_total).  Streams still cut
 * off slow readers at [limits] stream_buffer.  Channels are plain strings;
 * tenant-scoped data goes on a channel named after the tenant
 * ("audit/ten_..."), so isolation does not rest on a filter. */
typedef struct relay_message {
        uint32_t size;       /* sizeof(relay_message) */
        const char *channel; /* "audit/ten_01..." */
        const char *event;   /* SSE event name, or NULL */
        const char *id;      /* SSE id, or NULL */
        const char *data;    /* SSE data, may hold newlines */
        int64_t seq;         /* the publisher's own order, for subscribers that dedupe */
} relay_message;

/* Runs on the stream's worker for each message of the channel; NULL sends
 * it as is (relay_sse_send with event, id, data). */
typedef void (*relay_message_fn)(relay_sse *sse, const relay_message *m, void *data);

/* Subscribes SSE to CHANNEL until the stream closes.  Call on the stream's
 * worker, usually in the handler that started it.  Messages published
 * after this call reach FN once the handler returns to the event loop. */
RELAY_API int relay_sse_subscribe(relay_sse *sse, const char *channel, relay_message_fn fn, void *data);

/* Sends M, a message handed to a relay_message_fn, on SSE as published:
 * its wire form is made once per message, not once per stream.  (1.2) */
RELAY_API int relay_sse_forward(relay_sse *sse, const relay_message *m);

/* Copies M and queues it for every subscribed stream of this daemon. */
RELAY_API int relay_publish(const relay_message *m);

RELAY_END_DECLS
#endif
