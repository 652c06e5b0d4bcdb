/* buf.h - a growable byte buffer, the core's one way to build output. */
#ifndef RELAY_BUF_H
#define RELAY_BUF_H

#include <stddef.h>
#include <stdarg.h>

typedef struct buf {
        char *data;
        size_t len;
        size_t cap;
} buf;

/* All return 0, or -1 when out of memory (the buffer is then unchanged). */
int buf_reserve(buf *b, size_t extra);
int buf_append(buf *b, const void *data, size_t len);
int buf_puts(buf *b, const char *s);
int buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends a NUL without counting it in len, so data reads as a string. */
int buf_terminate(buf *b);
void buf_consume(buf *b, size_t n); /* drops the first n bytes */
/* Decimal, without printf: replies are built on the hot path. */
int buf_put_uint(buf *b, unsigned long long v);
void buf_free(buf *b);

static inline void buf_reset(buf *b) { b->len = 0; }

#endif
