/* buf.c - growable byte buffer. */
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include "buf.h"

int buf_reserve(buf *b, size_t extra)
{
        if (b->cap - b->len >= extra)
                return 0;
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < extra) {
                if (cap > ((size_t)-1) / 2)
                        return -1;
                cap *= 2;
        }
        char *p = realloc(b->data, cap);
        if (!p)
                return -1;
        b->data = p;
        b->cap = cap;
        return 0;
}

int buf_append(buf *b, const void *data, size_t len)
{
        if (len == 0)
                return 0;
        if (buf_reserve(b, len) != 0)
                return -1;
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

int buf_puts(buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_vprintf(buf *b, const char *fmt, va_list ap)
{
        va_list copy;
        va_copy(copy, ap);
        int n = vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->cap - b->len : 0, fmt, copy);
        va_end(copy);
        if (n < 0)
                return -1;
        if ((size_t)n >= b->cap - b->len || !b->data) {
                if (buf_reserve(b, (size_t)n + 1) != 0)
                        return -1;
                vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
        }
        b->len += (size_t)n;
        return 0;
}

int buf_printf(buf *b, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        int rc = buf_vprintf(b, fmt, ap);
        va_end(ap);
        return rc;
}

int buf_terminate(buf *b)
{
        if (buf_reserve(b, 1) != 0)
                return -1;
        b->data[b->len] = '\0';
        return 0;
}

void buf_consume(buf *b, size_t n)
{
        if (n >= b->len) {
                b->len = 0;
                return;
        }
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
}

void buf_free(buf *b)
{
        free(b->data);
        b->data = NULL;
        b->len = b->cap = 0;
}

int buf_put_uint(buf *b, unsigned long long v)
{
        char digits[24], *p = digits + sizeof(digits);
        do
                *--p = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        return buf_append(b, p, (size_t)(digits + sizeof(digits) - p));
}
