/* read.c - the read routes:
 *   GET /v1/records?status=&type=&site=&updated_since=&limit=&cursor=
 *       live records (no tombstones), newest first, cursor paged.  The
 *       cursor is the last id shown and ids only grow, so pages neither
 *       repeat nor skip records while others are inserted.  No sentinel
 *       id stands for "from the top": under a linguistic collation
 *       (PostgreSQL databases made with en_US.UTF-8...) "rec_~" sorts
 *       before every id, and the first page came back empty.
 *   GET /v1/records/:id   one record; a tombstone answers 410 */
#include <string.h>
#include "records.h"

/* Is S valid UTF-8?  jansson makes strings of nothing else. */
static bool utf8_valid(const char *s)
{
        json_t *j = json_string(s);
        json_decref(j);
        return j != NULL;
}

static int get_records(relay_req *req)
{
        const char *status = relay_query(req, "status"), *type = relay_query(req, "type");
        const char *site = relay_query(req, "site"), *since = relay_query(req, "updated_since");
        long max = (long)relay_conf_int(records_self, "max_page_size");
        bool bad = false;
        long limit = relay_query_limit(req, "limit", max < 50 ? max : 50, max, &bad);
        if (bad)
                return relay_error(req, 400, "invalid_limit", "limit must be an integer from 1 to %ld", max);
        if (status && !record_status_valid(status))
                return relay_error(req, 400, "invalid_status", "status must be draft, queued, synced or failed");
        /* No stored text is anything but UTF-8; PostgreSQL refuses such a
         * parameter (a 500) where SQLite would compare it: 400 on both. */
        if (type && !utf8_valid(type))
                return relay_error(req, 400, "invalid_type", "type must be UTF-8 text");
        if (site && !utf8_valid(site))
                return relay_error(req, 400, "invalid_site", "site must be UTF-8 text");
        int64_t since_ms = 0;
        if (since && relay_time_parse(since, &since_ms) != RELAY_OK)
                return relay_error(req, 400, "invalid_updated_since", "updated_since must be an RFC 3339 time");
        json_t *cursor;
        if (relay_query_cursor(req, "cursor", &cursor) != RELAY_OK)
                return RELAY_OK;
        const char *after = json_string_value(json_object_get(cursor, "id"));
        if (cursor && !record_id_valid(after))
                return relay_error(req, 400, "invalid_cursor", "cursor is not one this server gave");
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT " RECORD_COLUMNS " FROM records_records WHERE tenant = ? AND deleted_ms IS NULL"
                                " AND (CAST(? AS TEXT) IS NULL OR status = ?) AND (CAST(? AS TEXT) IS NULL OR type = ?)"
                                " AND (CAST(? AS TEXT) IS NULL OR site = ?) AND updated_ms >= ?"
                                " AND (CAST(? AS TEXT) IS NULL OR id < ?)"
                                " ORDER BY id DESC LIMIT ?",
                                "sssssssissi", relay_principal_of(req)->tenant, status, status, type, type, site, site,
                                since_ms, after, after, (int64_t)limit + 1);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        return relay_reply_page(req, r, "records", limit, record_json);
}

static int get_record(relay_req *req)
{
        const char *id = relay_param(req, "id");
        /* Not echoed: the client's bytes, cut anywhere, need not be UTF-8,
         * and a message that is not makes the whole answer a 500. */
        if (!record_id_valid(id))
                return relay_error(req, 404, "record.not_found", "no such record");
        relay_db_result *r;
        int rc = relay_db_query(relay_db_of(req), &r,
                                "SELECT " RECORD_COLUMNS " FROM records_records WHERE tenant = ? AND id = ?", "ss",
                                relay_principal_of(req)->tenant, id);
        if (rc != RELAY_DB_OK)
                return relay_db_reply_error(req, rc);
        if (!relay_db_next(r)) {
                relay_db_free(r);
                return relay_error(req, 404, "record.not_found", "no record %s", id);
        }
        if (relay_db_is_null(r, RECORD_COL_DELETED_MS)) { /* the common case, written straight from the row */
                rc = relay_reply_row(req, 200, r, record_fields);
                relay_db_free(r);
                return rc;
        }
        json_t *record = record_json(r);
        relay_db_free(r);
        return relay_error_json(req, 410, "record.deleted", "the record was deleted",
                                json_pack("{s:o}", "current", record));
}

int records_read_register(relay_plugin *p)
{
        if (relay_route(p, "GET", "/v1/records", get_records, RELAY_AUTH_TENANT) ||
            relay_route(p, "GET", "/v1/records/:id", get_record, RELAY_AUTH_TENANT))
                return RELAY_ERR;
        return RELAY_OK;
}
