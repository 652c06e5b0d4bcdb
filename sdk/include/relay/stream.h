/* relay/stream.h - extra TCP listeners for protocols that are not HTTP
 * (relay sessions).  Callbacks run on the daemon's control thread. */
#ifndef RELAY_STREAM_H
#define RELAY_STREAM_H

#include <relay/common.h>

RELAY_BEGIN_DECLS

typedef struct relay_stream_cbs {
        uint32_t size; /* sizeof(relay_stream_cbs) */
        void (*on_open)(relay_stream *s);
        void (*on_data)(relay_stream *s, const void *data, size_t len);
        void (*on_close)(relay_stream *s); /* last call: S is freed after it */
        void *reserved[4];
} relay_stream_cbs;

/* Listen on ADDR ("127.0.0.1:7000", "[::]:7000", port 0 picks one).  Call
 * in start().  Returns the bound port, or RELAY_ERR. */
RELAY_API int relay_listen(relay_plugin *p, const char *addr, const relay_stream_cbs *cbs, void *data);
RELAY_API int relay_stream_write(relay_stream *s, const void *data, size_t len);
RELAY_API void relay_stream_close(relay_stream *s);
RELAY_API void *relay_stream_listener_data(relay_stream *s);
RELAY_API void relay_stream_set_data(relay_stream *s, void *data);
RELAY_API void *relay_stream_data(relay_stream *s);
RELAY_API const char *relay_stream_peer_ip(relay_stream *s);
RELAY_API relay_plugin *relay_stream_plugin(relay_stream *s);

RELAY_END_DECLS
#endif
