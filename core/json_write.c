/* json_write.c - compact JSON straight into a buf, for replies.
 *
 * Every JSON reply went through json_dumps: a callback per fragment, a
 * strbuffer that grows by doubling, then strlen and a copy into the
 * connection's buffer.  This writes the same bytes (jansson's compact
 * form: keys in insertion order, "," and ":" without spaces, the same
 * string escapes) into a reusable buffer in one pass.  Reals are rare in
 * replies and their shortest-form rules are jansson's own, so they are
 * formatted by jansson itself, byte for byte. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include "json_write.h"

/* Twice jansson's parse limit (2048): any document a request brought, wrapped
 * in a reply, fits; a cycle or a runaway structure stops here. */
#define MAX_DEPTH 4096

size_t utf8_sequence_len(const unsigned char *s, size_t n)
{
        unsigned char c = s[0];
        size_t len = c < 0x80                 ? 1
                     : c >= 0xc2 && c <= 0xdf ? 2
                     : c >= 0xe0 && c <= 0xef ? 3
                     : c >= 0xf0 && c <= 0xf4 ? 4
                                              : 0;
        if (len > n)
                return 0;
        unsigned char lo = c == 0xe0 ? 0xa0 : c == 0xf0 ? 0x90 : 0x80, hi = c == 0xed ? 0x9f : c == 0xf4 ? 0x8f : 0xbf;
        for (size_t i = 1; i < len; i++, lo = 0x80, hi = 0xbf)
                if (s[i] < lo || s[i] > hi)
                        return 0;
        return len;
}

/* A JSON string: '"' and '\\' escaped, control characters as \b \f \n \r
 * \t or \u00XX (upper-case hex, as jansson), everything else verbatim.
 * Invalid UTF-8 fails, as it does in json_dumps. */
int json_write_string(buf *o, const char *str, size_t n)
{
        static const char hex[] = "0123456789ABCDEF";
        const unsigned char *s = (const unsigned char *)str;
        if (buf_reserve(o, n + 2) != 0)
                return -1;
        o->data[o->len++] = '"';
        size_t run = 0; /* start of the bytes not yet copied */
        for (size_t i = 0; i < n;) {
                unsigned char c = s[i];
                if (c >= 0x80) {
                        size_t len = utf8_sequence_len(s + i, n - i);
                        if (!len)
                                return -1;
                        i += len;
                        continue;
                }
                if (c >= 0x20 && c != '"' && c != '\\') {
                        i++;
                        continue;
                }
                if (buf_append(o, s + run, i - run) != 0)
                        return -1;
                char esc[6] = {'\\', 0};
                size_t elen = 2;
                switch (c) {
                case '"': esc[1] = '"'; break;
                case '\\': esc[1] = '\\'; break;
                case '\b': esc[1] = 'b'; break;
                case '\f': esc[1] = 'f'; break;
                case '\n': esc[1] = 'n'; break;
                case '\r': esc[1] = 'r'; break;
                case '\t': esc[1] = 't'; break;
                default:
                        memcpy(esc + 1, "u00", 3);
                        esc[4] = hex[c >> 4];
                        esc[5] = hex[c & 15];
                        elen = 6;
                }
                if (buf_append(o, esc, elen) != 0)
                        return -1;
                run = ++i;
        }
        if (buf_append(o, s + run, n - run) != 0 || buf_append(o, "\"", 1) != 0)
                return -1;
        return 0;
}

int json_write_integer(buf *o, json_int_t v)
{
        if (v >= 0)
                return buf_put_uint(o, (unsigned long long)v);
        if (buf_append(o, "-", 1) != 0)
                return -1;
        return buf_put_uint(o, 0ULL - (unsigned long long)v); /* no overflow at the minimum */
}

static int write_real(buf *o, const json_t *v)
{
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        int rc = s ? buf_puts(o, s) : -1; /* NaN and infinities cannot be made into a json_t */
        free(s);
        return rc;
}

static int write_value(buf *o, const json_t *v, int depth);

static int write_object(buf *o, const json_t *v, int depth)
{
        if (buf_append(o, "{", 1) != 0)
                return -1;
        const char *key;
        size_t key_len;
        json_t *member;
        bool first = true;
        json_object_keylen_foreach((json_t *)v, key, key_len, member)
        {
                if ((!first && buf_append(o, ",", 1) != 0) || json_write_string(o, key, key_len) != 0 ||
                    buf_append(o, ":", 1) != 0 || write_value(o, member, depth + 1) != 0)
                        return -1;
                first = false;
        }
        return buf_append(o, "}", 1);
}

static int write_array(buf *o, const json_t *v, int depth)
{
        if (buf_append(o, "[", 1) != 0)
                return -1;
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++)
                if ((i && buf_append(o, ",", 1) != 0) || write_value(o, json_array_get(v, i), depth + 1) != 0)
                        return -1;
        return buf_append(o, "]", 1);
}

static int write_value(buf *o, const json_t *v, int depth)
{
        if (!v || depth > MAX_DEPTH)
                return -1;
        switch (json_typeof(v)) {
        case JSON_OBJECT: return write_object(o, v, depth);
        case JSON_ARRAY: return write_array(o, v, depth);
        case JSON_STRING: return json_write_string(o, json_string_value(v), json_string_length(v));
        case JSON_INTEGER: return json_write_integer(o, json_integer_value(v));
        case JSON_REAL: return write_real(o, v);
        case JSON_TRUE: return buf_append(o, "true", 4);
        case JSON_FALSE: return buf_append(o, "false", 5);
        case JSON_NULL: return buf_append(o, "null", 4);
        }
        return -1;
}

int json_write(buf *o, const json_t *v)
{
        size_t before = o->len;
        if (write_value(o, v, 0) == 0)
                return 0;
        o->len = before; /* nothing half-written */
        return -1;
}
