/* cursor.c - opaque pagination cursors (relay/util.h).
 *
 * A cursor is base64url of a compact JSON object that says where the next
 * page starts.  Clients must treat it as opaque; the server trusts nothing
 * in it beyond "a JSON object": every query that uses it still filters by
 * tenant, so an edited cursor can only move within the caller's own data. */
#include <string.h>
#include <stdlib.h>
#include "http.h"

RELAY_API int relay_cursor_encode(const json_t *state, char *out, size_t out_len)
{
        char *text = state ? json_dumps(state, JSON_COMPACT) : NULL;
        size_t n = text ? strlen(text) : 0;
        int rc = RELAY_ERR;
        if (text && RELAY_B64_LEN(n) <= out_len && RELAY_B64_LEN(n) <= RELAY_CURSOR_MAX) {
                relay_b64url_encode(text, n, out, out_len);
                rc = RELAY_OK;
        } else if (out_len) {
                out[0] = '\0';
        }
        free(text);
        return rc;
}

RELAY_API int relay_query_cursor(relay_req *req, const char *name, json_t **state)
{
        const char *v = relay_query(req, name);
        *state = NULL;
        if (!v || !*v)
                return RELAY_OK;
        char raw[RELAY_CURSOR_MAX];
        int n = strlen(v) < RELAY_CURSOR_MAX ? relay_b64url_decode(v, raw, sizeof(raw) - 1) : RELAY_ERR;
        json_t *j = n > 0 ? json_loadb(raw, (size_t)n, JSON_REJECT_DUPLICATES, NULL) : NULL;
        if (!json_is_object(j)) {
                json_decref(j);
                relay_error(req, 400, "invalid_cursor", "the %s parameter is not a cursor this server gave", name);
                return RELAY_ERR;
        }
        *state = req_keep(req, j);
        return RELAY_OK;
}

RELAY_API int relay_reply_page(relay_req *req, relay_db_result *r, const char *key, long limit, relay_row_fn row)
{
        json_t *list = json_array();
        char next[RELAY_CURSOR_MAX] = "";
        for (long i = 0; relay_db_next(r); i++) {
                if (i == limit) { /* the row more: there is a next page, after the last one shown */
                        json_t *pos = json_pack("{s:O}", "id", json_object_get(json_array_get(list, i - 1), "id"));
                        relay_cursor_encode(pos, next, sizeof(next));
                        json_decref(pos);
                        break;
                }
                json_array_append_new(list, row(r));
        }
        relay_db_free(r);
        return relay_reply_json(req, 200, json_pack("{s:o,s:s?}", key, list, "next_cursor", *next ? next : NULL));
}
