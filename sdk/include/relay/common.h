/* relay/common.h - types shared by every SDK header. */
#ifndef RELAY_COMMON_H
#define RELAY_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#ifdef __cplusplus
#define RELAY_BEGIN_DECLS extern "C" {
#define RELAY_END_DECLS }
#else
#define RELAY_BEGIN_DECLS
#define RELAY_END_DECLS
#endif

/* Symbols of librelay that plugins may use.  Everything else is hidden. */
#if defined(__GNUC__)
#define RELAY_API __attribute__((visibility("default")))
#define RELAY_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define RELAY_API
#define RELAY_PRINTF(f, a)
#endif

/* Opaque handles.  Their layout is private to the daemon, so it can change
 * without breaking plugins. */
typedef struct relay_plugin relay_plugin; /* a loaded plugin */
typedef struct relay_req relay_req;       /* one HTTP request */
typedef struct relay_sse relay_sse;       /* a Server-Sent Events stream */
typedef struct relay_stream relay_stream; /* a raw TCP connection */
typedef struct relay_timer relay_timer;
typedef struct relay_counter relay_counter;

/* What handlers and callbacks return. */
enum {
        RELAY_OK = 0,    /* done (for a handler: a reply has been sent) */
        RELAY_ASYNC = 1, /* a handler will reply later (relay_work, SSE) */
        RELAY_ERR = -1   /* failure; a handler that did not reply gets a 500 */
};

#endif
