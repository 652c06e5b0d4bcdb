/* json_write.h - compact JSON into a buf, byte for byte what
 * json_dumps(JSON_COMPACT | JSON_ENCODE_ANY) writes, without its copies. */
#ifndef RELAY_JSON_WRITE_H
#define RELAY_JSON_WRITE_H

#include <jansson.h>
#include "buf.h"

/* Appends V to O: 0, or -1 (invalid UTF-8 in a string, nesting deeper
 * than jansson allows, out of memory) with O as it was. */
int json_write(buf *o, const json_t *v);

/* One string (N bytes) and one integer, as json_write writes them; the
 * string fails (-1) on invalid UTF-8. */
int json_write_string(buf *o, const char *s, size_t n);
int json_write_integer(buf *o, json_int_t v);

/* Length of the valid UTF-8 sequence at S, within N bytes (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF), or 0.  On a
 * NUL-terminated string N may be SIZE_MAX: a NUL never continues one. */
size_t utf8_sequence_len(const unsigned char *s, size_t n);

#endif
