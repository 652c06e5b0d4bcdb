/* bundle.c - building an evidence bundle: the entries of a time range as
 * a tar.gz that relay-audit-verify checks with the public key alone
 * (verify.c describes the files).
 *
 * The range is widened to whole chain positions: first_seq is the first
 * entry at or after FROM, last_seq the last at or before TO, and every
 * entry between them is in the bundle, so the chain has no holes.  Entries
 * outside the chosen components keep their place as hashes only.  A
 * checkpoint is signed at last_seq if there is none, so the bundle's end
 * is covered by a signature. */
#include <stdlib.h>
#include <string.h>
#include <archive.h>
#include <archive_entry.h>
#include "audit.h"

typedef struct membuf {
        unsigned char *data;
        size_t len, cap;
        bool failed;
} membuf;

static la_ssize_t mem_write(struct archive *a, void *client, const void *buf, size_t n)
{
        membuf *m = client;
        if (m->len + n > m->cap) {
                size_t cap = m->cap ? m->cap * 2 : 65536;
                while (cap < m->len + n)
                        cap *= 2;
                unsigned char *d = realloc(m->data, cap);
                if (!d) {
                        m->failed = true;
                        return -1;
                }
                m->data = d;
                m->cap = cap;
        }
        memcpy(m->data + m->len, buf, n);
        m->len += n;
        return (la_ssize_t)n;
}

static bool add_file(struct archive *a, const char *name, const void *data, size_t len, int64_t mtime_ms)
{
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, name);
        archive_entry_set_size(e, (la_int64_t)len);
        archive_entry_set_filetype(e, AE_IFREG);
        archive_entry_set_perm(e, 0644);
        archive_entry_set_mtime(e, (time_t)(mtime_ms / 1000), 0);
        bool ok = archive_write_header(a, e) == ARCHIVE_OK &&
                  (len == 0 || archive_write_data(a, data, len) == (la_ssize_t)len);
        archive_entry_free(e);
        return ok;
}

/* Is the entry (KIND, TYPE) in COMPONENTS?  NULL: everything is. */
static bool selected(json_t *components, const char *kind, const char *type)
{
        if (!components)
                return true;
        size_t i;
        json_t *c;
        size_t seg = strcspn(type, ".");
        json_array_foreach(components, i, c)
        {
                const char *name = json_string_value(c);
                if (strcmp(kind, "request") == 0
                            ? strcmp(name, "requests") == 0
                            : strcmp(name, "events") == 0 || (strlen(name) == seg && strncmp(name, type, seg) == 0))
                        return true;
        }
        return false;
}

static int range_of(relay_db *db, const char *tenant, int64_t from, int64_t to, int64_t *first, int64_t *last)
{
        relay_db_result *r;
        int rc = relay_db_query(db, &r,
                                "SELECT (SELECT MIN(seq) FROM audit_entries WHERE tenant = ? AND time_ms >= ?),"
                                " (SELECT MAX(seq) FROM audit_entries WHERE tenant = ? AND time_ms <= ?)",
                                "sisi", tenant, from, tenant, to);
        *first = *last = 0;
        if (rc == RELAY_DB_OK && relay_db_next(r) && !relay_db_is_null(r, 0) && !relay_db_is_null(r, 1)) {
                *first = relay_db_int(r, 0);
                *last = relay_db_int(r, 1);
        }
        relay_db_free(r);
        if (*first > *last)
                *first = *last = 0;
        return rc;
}

/* entries.jsonl, and the anchor (prev_hash of the first) and last hash. */
static int entries_file(relay_db *db, const char *tenant, int64_t first, int64_t last, json_t *components, buf_t *out,
                        char anchor[65], char last_hash[65], int64_t *redacted)
{
        snprintf(anchor, 65, "%s", AUDIT_ZERO_HASH);
        last_hash[0] = '\0';
        for (int64_t at = first; first && at <= last;) {
                relay_db_result *r;
                int rc = relay_db_query(db, &r,
                                        "SELECT seq, id, kind, type, body, prev_hash, hash FROM audit_entries "
                                        "WHERE tenant = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT 1000",
                                        "sii", tenant, at, last);
                if (rc != RELAY_DB_OK)
                        return rc;
                size_t rows = relay_db_rows(r);
                while (relay_db_next(r)) {
                        const char *body = relay_db_text(r, 4);
                        char body_sha[65];
                        audit_sha256_hex(body, strlen(body), body_sha);
                        if (relay_db_int(r, 0) == first)
                                snprintf(anchor, 65, "%s", relay_db_text(r, 5));
                        bool keep = selected(components, relay_db_text(r, 2), relay_db_text(r, 3));
                        json_t *line = json_pack("{s:I,s:s,s:s,s:s,s:s}", "seq", (json_int_t)relay_db_int(r, 0), "id",
                                                 relay_db_text(r, 1), "hash", relay_db_text(r, 6), "prev_hash",
                                                 relay_db_text(r, 5), "body_sha256", body_sha);
                        json_object_set_new(line, keep ? "body" : "redacted", keep ? json_string(body) : json_true());
                        *redacted += keep ? 0 : 1;
                        char *text = json_dumps(line, JSON_COMPACT | JSON_SORT_KEYS);
                        json_decref(line);
                        if (text) {
                                buf_add(out, text, strlen(text));
                                buf_add(out, "\n", 1);
                        }
                        free(text);
                        snprintf(last_hash, 65, "%s", relay_db_text(r, 6));
                        at = relay_db_int(r, 0) + 1;
                }
                relay_db_free(r);
                if (rows == 0)
                        break;
        }
        return RELAY_DB_OK;
}

static int checkpoints_file(relay_db *db, const char *tenant, int64_t first, int64_t last, char **out, int64_t *count)
{
        relay_db_result *r;
        int rc = relay_db_query(db, &r,
                                "SELECT seq, hash, time_ms, signature FROM audit_checkpoints WHERE tenant = ? AND "
                                "seq >= ? AND seq <= ? AND key_id = ? ORDER BY seq",
                                "siis", tenant, first, last, audit_signing_key.key_id);
        if (rc != RELAY_DB_OK)
                return rc;
        json_t *list = json_array();
        while (relay_db_next(r))
                json_array_append_new(list,
                                      json_pack("{s:I,s:s,s:I,s:s,s:s}", "seq", (json_int_t)relay_db_int(r, 0), "hash",
                                                relay_db_text(r, 1), "time_ms", (json_int_t)relay_db_int(r, 2),
                                                "key_id", audit_signing_key.key_id, "signature", relay_db_text(r, 3)));
        relay_db_free(r);
        *count = (int64_t)json_array_size(list);
        *out = json_dumps(list, JSON_INDENT(1) | JSON_SORT_KEYS);
        json_decref(list);
        return *out ? RELAY_DB_OK : RELAY_DB_ERROR;
}

int audit_bundle_build(relay_db *db, const char *bundle_id, const char *tenant, int64_t from, int64_t to,
                       json_t *components, unsigned char **out, size_t *len, json_t **summary, char *err,
                       size_t err_len)
{
        int64_t first, last, redacted = 0, n_checkpoints = 0, now = relay_now_ms();
        int rc = range_of(db, tenant, from, to, &first, &last);
        if (rc != RELAY_DB_OK)
                return rc;
        int64_t max = relay_conf_int(audit_self, "bundle_max_entries");
        if (first && last - first + 1 > max) {
                snprintf(err, err_len,
                         "the range holds %lld entries; a bundle holds at most %lld ([audit] "
                         "bundle_max_entries): choose a shorter range",
                         (long long)(last - first + 1), (long long)max);
                return RELAY_ERR;
        }
        buf_t entries = {0};
        char anchor[65], last_hash[65], *checkpoints = NULL;
        rc = entries_file(db, tenant, first, last, components, &entries, anchor, last_hash, &redacted);
        if (rc == RELAY_DB_OK && first)
                rc = audit_checkpoint_at(db, tenant, last, last_hash);
        if (rc == RELAY_DB_OK)
                rc = checkpoints_file(db, tenant, first, last, &checkpoints, &n_checkpoints);
        if (rc != RELAY_DB_OK) {
                free(entries.data);
                return rc;
        }
        char entries_sha[65], cp_sha[65], from_s[40], to_s[40], now_s[40];
        audit_sha256_hex(entries.data ? entries.data : "", entries.len, entries_sha);
        audit_sha256_hex(checkpoints, strlen(checkpoints), cp_sha);
        json_t *manifest = json_pack(
                "{s:s,s:s,s:s,s:s,s:s,s:s,s:O,s:{s:s,s:I,s:I,s:I,s:I,s:s,s:s},s:{s:s,s:I,s:s},s:{s:s,s:s,s:s}}",
                "format", AUDIT_BUNDLE_FORMAT, "bundle_id", bundle_id, "tenant", tenant, "from",
                relay_time_format(from, from_s, sizeof(from_s)), "to", relay_time_format(to, to_s, sizeof(to_s)),
                "created_at", relay_time_format(now, now_s, sizeof(now_s)), "components",
                components ? components : json_null(), "entries", "file", "entries.jsonl", "count",
                (json_int_t)(first ? last - first + 1 : 0), "first_seq", (json_int_t)first, "last_seq",
                (json_int_t)last, "redacted", (json_int_t)redacted, "anchor_prev_hash", anchor, "sha256", entries_sha,
                "checkpoints", "file", "checkpoints.json", "count", (json_int_t)n_checkpoints, "sha256", cp_sha,
                "public_key", "algorithm", "ed25519", "key_id", audit_signing_key.key_id, "public_key",
                audit_signing_key.pk_b64);
        char *manifest_text = manifest ? json_dumps(manifest, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
        char sig[100] = "";
        if (manifest_text)
                audit_sign(manifest_text, strlen(manifest_text), sig, sizeof(sig));
        strcat(sig, "\n");
        membuf m = {0};
        struct archive *a = archive_write_new();
        archive_write_add_filter_gzip(a);
        archive_write_set_format_pax_restricted(a);
        archive_write_set_bytes_in_last_block(a, 1);
        bool ok = manifest_text && archive_write_open(a, &m, NULL, mem_write, NULL) == ARCHIVE_OK &&
                  add_file(a, "manifest.json", manifest_text, strlen(manifest_text), now) &&
                  add_file(a, "manifest.sig", sig, strlen(sig), now) &&
                  add_file(a, "entries.jsonl", entries.data, entries.len, now) &&
                  add_file(a, "checkpoints.json", checkpoints, strlen(checkpoints), now) &&
                  archive_write_close(a) == ARCHIVE_OK && !m.failed;
        archive_write_free(a);
        free(entries.data), free(checkpoints), free(manifest_text);
        if (!ok) {
                free(m.data);
                json_decref(manifest);
                snprintf(err, err_len, "cannot assemble the bundle");
                return RELAY_DB_ERROR;
        }
        *out = m.data;
        *len = m.len;
        *summary = json_pack("{s:I,s:I,s:I,s:I,s:I}", "entries", (json_int_t)(first ? last - first + 1 : 0),
                             "first_seq", (json_int_t)first, "last_seq", (json_int_t)last, "redacted",
                             (json_int_t)redacted, "checkpoints", (json_int_t)n_checkpoints);
        json_decref(manifest);
        return RELAY_DB_OK;
}
