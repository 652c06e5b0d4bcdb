/* row_json.c - a database row as a JSON object (relay_row_field, relay/db.h).
 *
 * A plugin describes the object once: member, column, kind.  For a list or
 * an event the row becomes a jansson object; for the common single-row
 * reply (GET /v1/records/:id) it is written straight into the reply
 * buffer, with json_write's escapes, the stored JSON columns copied as
 * text: no object, no parse of the stored document, no serialisation of
 * it again.  Both produce the same bytes (tests/unit/test_row_json.c). */
#include <string.h>
#include "json_write.h"
#include "row_json.h"
#include "relay/util.h"

/* Column COL's text and its length as jansson would see it (to the first
 * NUL, as json_string_nocheck reads it), or NULL for SQL NULL. */
static const char *text_of(relay_db_result *r, int col, size_t *len)
{
        const char *s = relay_db_text(r, (size_t)col);
        *len = s ? strlen(s) : 0;
        return s;
}

RELAY_API json_t *relay_row_json(relay_db_result *r, const relay_row_field *fields)
{
        json_t *o = json_object();
        for (const relay_row_field *f = fields; o && f && f->name; f++) {
                size_t col = (size_t)f->column, len;
                json_t *v;
                char at[40];
                switch (f->kind) {
                case RELAY_FIELD_TEXT: {
                        const char *s = text_of(r, f->column, &len);
                        v = s ? json_stringn_nocheck(s, len) : json_null();
                        break;
                }
                case RELAY_FIELD_INT:
                        v = relay_db_is_null(r, col) ? json_null() : json_integer(relay_db_int(r, col));
                        break;
                case RELAY_FIELD_TIME:
                        v = relay_db_is_null(r, col)
                                    ? json_null()
                                    : json_string_nocheck(relay_time_format(relay_db_int(r, col), at, sizeof(at)));
                        break;
                case RELAY_FIELD_JSON:
                        v = relay_db_json(r, col);
                        if (!v)
                                v = json_null();
                        break;
                case RELAY_FIELD_SET: v = json_boolean(!relay_db_is_null(r, col)); break;
                default: v = json_null();
                }
                if (json_object_set_new_nocheck(o, f->name, v) != 0) {
                        json_decref(o);
                        o = NULL;
                }
        }
        return o;
}

static int write_field(buf *o, relay_db_result *r, const relay_row_field *f)
{
        size_t col = (size_t)f->column, len;
        switch (f->kind) {
        case RELAY_FIELD_TEXT: {
                const char *s = text_of(r, f->column, &len);
                return s ? json_write_string(o, s, len) : buf_append(o, "null", 4);
        }
        case RELAY_FIELD_INT:
                return relay_db_is_null(r, col) ? buf_append(o, "null", 4)
                                                : json_write_integer(o, relay_db_int(r, col));
        case RELAY_FIELD_TIME: {
                if (relay_db_is_null(r, col))
                        return buf_append(o, "null", 4);
                char at[40];
                const char *s = relay_time_format(relay_db_int(r, col), at, sizeof(at));
                return s ? json_write_string(o, s, strlen(s)) : -1;
        }
        case RELAY_FIELD_JSON: {
                const char *s = text_of(r, f->column, &len);
                return s ? buf_append(o, s, len) : buf_append(o, "null", 4);
        }
        case RELAY_FIELD_SET: return relay_db_is_null(r, col) ? buf_append(o, "false", 5) : buf_append(o, "true", 4);
        default: return buf_append(o, "null", 4);
        }
}

int row_json_write(buf *o, relay_db_result *r, const relay_row_field *fields)
{
        size_t start = o->len;
        int rc = buf_append(o, "{", 1);
        for (const relay_row_field *f = fields; rc == 0 && f && f->name; f++)
                rc = (f == fields ? 0 : buf_append(o, ",", 1)) || json_write_string(o, f->name, strlen(f->name)) ||
                     buf_append(o, ":", 1) || write_field(o, r, f);
        if (rc == 0)
                rc = buf_append(o, "}", 1);
        if (rc != 0) {
                o->len = start;
                return -1;
        }
        return 0;
}
