/* relay/util.h - small helpers every plugin needs: ids, time, encodings,
 * pagination.  Pure functions; safe on any thread. */
#ifndef RELAY_UTIL_H
#define RELAY_UTIL_H

#include <stdbool.h>
#include <jansson.h>
#include <relay/common.h>

RELAY_BEGIN_DECLS

/* Milliseconds since the Unix epoch (wall clock). */
RELAY_API int64_t relay_now_ms(void);
/* "2026-11-22T06:01:31.123Z"; BUF holds at least 32 bytes. */
RELAY_API char *relay_time_format(int64_t ms, char *buf, size_t len);
/* RFC 3339 to ms; returns RELAY_ERR on a malformed time. */
RELAY_API int relay_time_parse(const char *s, int64_t *ms);

/* A sortable id: PREFIX then 26 Crockford base32 characters (48-bit ms
 * time, 80 random bits, ULID layout), e.g. "rec_01HJ...".  Monotonic in
 * the process: an id made in the same millisecond as the one before
 * counts up from it, so ids sort in the order they were made.  BUF holds at
 * least strlen(prefix) + 27 bytes. */
#define RELAY_ULID_LEN 26
RELAY_API char *relay_id_new(const char *prefix, char *buf, size_t len);
/* Is S PREFIX followed by 26 Crockford base32 characters of a ULID (the
 * shape relay_id_new makes)?  ("" checks a bare ULID.)  (ABI 1.1) */
RELAY_API bool relay_id_valid(const char *prefix, const char *s);
/* A random UUID v4, 37 bytes with the terminator. */
RELAY_API char *relay_uuid4(char *buf, size_t len);
/* Fills BUF with LEN cryptographically random bytes (libsodium). */
RELAY_API void relay_random(void *buf, size_t len);

/* Unpadded base64url.  Encode: OUT holds RELAY_B64_LEN(n) bytes.  Decode:
 * returns the decoded length or RELAY_ERR. */
#define RELAY_B64_LEN(n) ((((n) + 2) / 3) * 4 + 1)
RELAY_API size_t relay_b64url_encode(const void *in, size_t n, char *out, size_t out_len);
RELAY_API int relay_b64url_decode(const char *in, void *out, size_t out_len);

/* ?limit= for list routes: DEF when absent; a value that is not an integer
 * in [1, MAX] sets *bad and returns DEF. */
RELAY_API long relay_query_limit(relay_req *req, const char *name, long def, long max, bool *bad);

/* Opaque pagination cursors: a small JSON object (the position: last id,
 * sequence number...) that clients hand back unchanged.  Encode writes
 * base64url of STATE into OUT (RELAY_CURSOR_MAX bytes suffice) and returns
 * RELAY_OK, or RELAY_ERR when it does not fit.  (ABI 1.1) */
#define RELAY_CURSOR_MAX 512
RELAY_API int relay_cursor_encode(const json_t *state, char *out, size_t out_len);
/* Reads the query parameter NAME as a cursor.  Absent or empty: *STATE =
 * NULL and RELAY_OK.  Not a cursor this server gave: replies 400
 * "invalid_cursor" in the plugin's error style and returns RELAY_ERR (the
 * handler then returns RELAY_OK).  *STATE is owned by the request. (1.1) */
RELAY_API int relay_query_cursor(relay_req *req, const char *name, json_t **state);

/* BLAKE2b-256 of DATA as 64 hex digits and a terminator (libsodium): how
 * secrets and request fingerprints are stored.  (ABI 1.1) */
RELAY_API void relay_hash_hex(const void *data, size_t len, char out[65]);
/* Constant-time equality of two buffers of LEN bytes.  (ABI 1.1) */
RELAY_API bool relay_equal_ct(const void *a, const void *b, size_t len);

/* The daemon's [server] data_dir, where a plugin keeps local files (keys).
 * (ABI 1.2) */
RELAY_API const char *relay_data_dir(void);

RELAY_END_DECLS
#endif
