/* relay/sse.h - Server-Sent Events responses.
 *
 * relay_sse_start() answers 200 text/event-stream (chunked) and keeps the
 * connection; the handler returns RELAY_ASYNC.  Sends are buffered up to the
 * daemon's [limits] stream_buffer: a client that does not read is cut off
 * (the close callback runs), so a slow consumer never grows memory without
 * bound.  All calls belong to the worker thread that owns the request. */
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

RELAY_END_DECLS
#endif
