/* verify.c - verification of evidence bundles, shared by the plugin and
 * the offline verifier.  A bundle is a tar.gz holding:
 *
 *   manifest.json     what the bundle covers, the SHA-256 of each file, the key
 *   manifest.sig      Ed25519 signature (base64) of manifest.json's bytes
 *   entries.jsonl     one chained entry per line, in order
 *   checkpoints.json  signed chain heads inside the range, the last one at
 *                     the range's last entry
 *
 * Trust comes only from the public key the caller gives: the manifest's
 * signature ties the files to the key, each entry's hash ties it to the
 * one before, and the checkpoints tie the chain to the key. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <archive.h>
#include <archive_entry.h>
#include <jansson.h>
#include <sodium.h>
#include "verify.h"

#define MAX_FILE (512u * 1024 * 1024)

void audit_sha256_hex(const void *data, size_t len, char out[65])
{
        unsigned char h[crypto_hash_sha256_BYTES];
        crypto_hash_sha256(h, data, len);
        sodium_bin2hex(out, 65, h, sizeof(h));
}

void audit_entry_hash(const char *prev_hash, const char *body_sha256, char out[65])
{
        char msg[16 + 65 + 1 + 65];
        int n = snprintf(msg, sizeof(msg), "relay-audit-v1\n%s\n%s", prev_hash, body_sha256);
        audit_sha256_hex(msg, (size_t)n, out);
}

void audit_checkpoint_statement(char *out, size_t len, const char *tenant, int64_t seq, const char *hash,
                                int64_t time_ms)
{
        snprintf(out, len, "relay-audit-checkpoint-v1\n%s\n%lld\n%s\n%lld", tenant, (long long)seq, hash,
                 (long long)time_ms);
}

void audit_receipt_statement(char *out, size_t len, const char *tenant, int64_t seq, const char *hash)
{
        snprintf(out, len, "relay-audit-receipt-v1\n%s\n%lld\n%s", tenant, (long long)seq, hash);
}

bool audit_signature_ok(const unsigned char pk[32], const char *msg, size_t len, const char *sig_b64)
{
        unsigned char sig[crypto_sign_BYTES];
        size_t n = 0;
        if (!sig_b64 ||
            sodium_base642bin(sig, sizeof(sig), sig_b64, strlen(sig_b64), NULL, &n, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            n != sizeof(sig))
                return false;
        return crypto_sign_verify_detached(sig, (const unsigned char *)msg, len, pk) == 0;
}

bool audit_public_key_decode(const char *b64, unsigned char pk[32])
{
        size_t n = 0;
        return b64 &&
               sodium_base642bin(pk, 32, b64, strlen(b64), " \t\r\n", &n, NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
               n == 32;
}

/* ------------------------------------------------------------ the files */

typedef struct file {
        char *data;
        size_t len;
} file;

typedef struct bundle_files {
        file manifest, sig, entries, checkpoints;
} bundle_files;

static file *slot(bundle_files *b, const char *name)
{
        if (strcmp(name, "manifest.json") == 0)
                return &b->manifest;
        if (strcmp(name, "manifest.sig") == 0)
                return &b->sig;
        if (strcmp(name, "entries.jsonl") == 0)
                return &b->entries;
        if (strcmp(name, "checkpoints.json") == 0)
                return &b->checkpoints;
        return NULL;
}

static bool fail(audit_verify_result *r, const char *msg)
{
        r->ok = false;
        snprintf(r->message, sizeof(r->message), "%s", msg);
        return false;
}

static bool read_files(const void *data, size_t len, bundle_files *b, audit_verify_result *r)
{
        struct archive *a = archive_read_new();
        archive_read_support_filter_gzip(a);
        archive_read_support_format_tar(a);
        bool ok = archive_read_open_memory(a, data, len) == ARCHIVE_OK;
        struct archive_entry *e;
        while (ok && archive_read_next_header(a, &e) == ARCHIVE_OK) {
                const char *name = archive_entry_pathname(e);
                file *f = name ? slot(b, name) : NULL;
                int64_t size = archive_entry_size(e);
                if (!f || f->data || size < 0 || (uint64_t)size > MAX_FILE)
                        continue; /* unknown or repeated names are not ours to trust */
                f->data = malloc((size_t)size + 1);
                if (!f->data || archive_read_data(a, f->data, (size_t)size) != (la_ssize_t)size) {
                        ok = false;
                        break;
                }
                f->data[size] = '\0';
                f->len = (size_t)size;
        }
        if (!ok)
                fail(r, "not a readable tar.gz bundle");
        archive_read_free(a);
        if (ok && (!b->manifest.data || !b->sig.data || !b->entries.data || !b->checkpoints.data))
                return fail(r, "bundle lacks manifest.json, manifest.sig, entries.jsonl or checkpoints.json");
        return ok;
}

static void files_free(bundle_files *b)
{
        free(b->manifest.data), free(b->sig.data), free(b->entries.data), free(b->checkpoints.data);
}

static bool file_hash_ok(json_t *manifest, const char *section, const file *f, audit_verify_result *r)
{
        const char *want = json_string_value(json_object_get(json_object_get(manifest, section), "sha256"));
        char have[65];
        audit_sha256_hex(f->data, f->len, have);
        if (!want || strcmp(want, have) != 0) {
                char msg[128];
                snprintf(msg, sizeof(msg), "%s does not match the SHA-256 in the manifest",
                         strcmp(section, "entries") == 0 ? "entries.jsonl" : "checkpoints.json");
                return fail(r, msg);
        }
        return true;
}

/* ------------------------------------------------------------ the chain */

typedef struct chain_pos {
        int64_t seq;
        char hash[65];
} chain_pos;

static bool bad_entry(audit_verify_result *r, int64_t seq, const char *id, const char *why)
{
        r->bad_seq = seq;
        snprintf(r->bad_id, sizeof(r->bad_id), "%s", id ? id : ""); /* "": not known (a missing entry) */
        char msg[200];
        snprintf(msg, sizeof(msg), "entry %lld (%s): %s", (long long)seq, id ? id : "?", why);
        return fail(r, msg);
}

/* One line of entries.jsonl against the chain so far. */
static bool check_line(json_t *line, const char *prev, int64_t want_seq, chain_pos *out, audit_verify_result *r)
{
        json_int_t seq = json_integer_value(json_object_get(line, "seq"));
        const char *id = json_string_value(json_object_get(line, "id"));
        const char *hash = json_string_value(json_object_get(line, "hash"));
        const char *prev_hash = json_string_value(json_object_get(line, "prev_hash"));
        const char *body_sha = json_string_value(json_object_get(line, "body_sha256"));
        json_t *body = json_object_get(line, "body");
        if (!json_is_integer(json_object_get(line, "seq")) || !hash || !prev_hash || !body_sha)
                return bad_entry(r, want_seq, id, "malformed line");
        if (seq != want_seq) /* ID is this line's, not the missing entry's */
                return bad_entry(r, want_seq, NULL, "missing or out of order (sequence numbers must follow)");
        if (strcmp(prev_hash, prev) != 0)
                return bad_entry(r, seq, id, "does not follow the entry before it (prev_hash differs)");
        char computed[65];
        if (json_is_string(body)) {
                audit_sha256_hex(json_string_value(body), json_string_length(body), computed);
                if (strcmp(computed, body_sha) != 0)
                        return bad_entry(r, seq, id, "its contents were altered (body SHA-256 differs)");
                json_t *parsed = json_loads(json_string_value(body), 0, NULL);
                bool same = parsed && json_integer_value(json_object_get(parsed, "seq")) == seq && id &&
                            json_is_string(json_object_get(parsed, "id")) &&
                            strcmp(json_string_value(json_object_get(parsed, "id")), id) == 0;
                json_decref(parsed);
                if (!same)
                        return bad_entry(r, seq, id, "its body names another entry");
        } else if (json_is_true(json_object_get(line, "redacted"))) {
                r->redacted++;
        } else {
                return bad_entry(r, seq, id, "has neither a body nor a redaction mark");
        }
        audit_entry_hash(prev_hash, body_sha, computed);
        if (strcmp(computed, hash) != 0)
                return bad_entry(r, seq, id, "its hash does not match its contents");
        out->seq = seq;
        snprintf(out->hash, sizeof(out->hash), "%s", hash);
        snprintf(r->bad_id, sizeof(r->bad_id), "%s", id ? id : "");
        return true;
}

static bool check_entries(const file *f, json_t *manifest, chain_pos **chain, audit_verify_result *r)
{
        json_t *m = json_object_get(manifest, "entries");
        int64_t count = json_integer_value(json_object_get(m, "count"));
        int64_t first = json_integer_value(json_object_get(m, "first_seq"));
        const char *anchor = json_string_value(json_object_get(m, "anchor_prev_hash"));
        if (!anchor || count < 0 || (count > 0 && first < 1))
                return fail(r, "manifest lacks the entries' count, first_seq or anchor_prev_hash");
        *chain = calloc((size_t)count + 1, sizeof(chain_pos));
        if (!*chain)
                return fail(r, "out of memory");
        char prev[65];
        snprintf(prev, sizeof(prev), "%s", anchor);
        int64_t n = 0;
        for (char *p = f->data; p && *p;) {
                char *nl = strchr(p, '\n');
                size_t len = nl ? (size_t)(nl - p) : strlen(p);
                if (n >= count)
                        return bad_entry(r, first + n, NULL, "more entries than the manifest lists");
                json_t *line = json_loadb(p, len, 0, NULL);
                bool ok = line && check_line(line, prev, first + n, &(*chain)[n], r);
                if (!line)
                        bad_entry(r, first + n, NULL, "not a JSON line");
                json_decref(line);
                if (!ok)
                        return false;
                snprintf(prev, sizeof(prev), "%s", (*chain)[n].hash);
                n++;
                p = nl ? nl + 1 : NULL;
        }
        if (n != count)
                return bad_entry(r, first + n, NULL, "missing: the manifest lists more entries");
        r->entries = n;
        r->first_seq = count ? first : 0;
        r->last_seq = count ? first + n - 1 : 0;
        return true;
}

static bool check_checkpoints(const file *f, json_t *manifest, const chain_pos *chain, const unsigned char pk[32],
                              audit_verify_result *r)
{
        const char *tenant = json_string_value(json_object_get(manifest, "tenant"));
        json_t *list = json_loadb(f->data, f->len, 0, NULL);
        if (!tenant || !json_is_array(list)) {
                json_decref(list);
                return fail(r, "checkpoints.json is not a list, or the manifest names no tenant");
        }
        bool last_covered = r->entries == 0, ok = true;
        size_t i;
        json_t *c;
        json_array_foreach(list, i, c)
        {
                int64_t seq = json_integer_value(json_object_get(c, "seq"));
                const char *hash = json_string_value(json_object_get(c, "hash"));
                int64_t time_ms = json_integer_value(json_object_get(c, "time_ms"));
                char stmt[256];
                audit_checkpoint_statement(stmt, sizeof(stmt), tenant, seq, hash ? hash : "", time_ms);
                if (!hash ||
                    !audit_signature_ok(pk, stmt, strlen(stmt), json_string_value(json_object_get(c, "signature")))) {
                        snprintf(r->message, sizeof(r->message), "checkpoint at entry %lld: bad signature",
                                 (long long)seq);
                        ok = false;
                        break;
                }
                if (seq >= r->first_seq && seq <= r->last_seq && r->entries > 0) {
                        const chain_pos *at = &chain[seq - r->first_seq];
                        if (strcmp(at->hash, hash) != 0) {
                                bad_entry(r, seq, NULL, "differs from the signed checkpoint at that position");
                                ok = false;
                                break;
                        }
                        if (seq == r->last_seq)
                                last_covered = true;
                }
                r->checkpoints++;
        }
        json_decref(list);
        if (ok && !last_covered)
                return fail(r, "no signed checkpoint covers the last entry");
        if (!ok)
                r->ok = false;
        return ok;
}

void audit_verify_bundle(const void *data, size_t len, const unsigned char pk[32], audit_verify_result *r)
{
        memset(r, 0, sizeof(*r));
        bundle_files b = {0};
        json_t *manifest = NULL;
        chain_pos *chain = NULL;
        unsigned char h[32];
        crypto_hash_sha256(h, pk, 32);
        char hex[65];
        sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
        snprintf(r->key_id, sizeof(r->key_id), "%.16s", hex);
        if (!read_files(data, len, &b, r))
                goto out;
        while (b.sig.len && (b.sig.data[b.sig.len - 1] == '\n' || b.sig.data[b.sig.len - 1] == '\r'))
                b.sig.data[--b.sig.len] = '\0';
        if (!audit_signature_ok(pk, b.manifest.data, b.manifest.len, b.sig.data)) {
                fail(r, "manifest.sig is not a signature of manifest.json by this public key");
                goto out;
        }
        manifest = json_loadb(b.manifest.data, b.manifest.len, 0, NULL);
        const char *format = json_string_value(json_object_get(manifest, "format"));
        if (!format || strcmp(format, AUDIT_BUNDLE_FORMAT) != 0) {
                fail(r, "manifest.json is not a " AUDIT_BUNDLE_FORMAT " manifest");
                goto out;
        }
        /* the chain first: an altered entry is named, not just "the file changed" */
        if (!check_entries(&b.entries, manifest, &chain, r) || !file_hash_ok(manifest, "entries", &b.entries, r) ||
            !file_hash_ok(manifest, "checkpoints", &b.checkpoints, r) ||
            !check_checkpoints(&b.checkpoints, manifest, chain, pk, r))
                goto out;
        r->ok = true;
        r->bad_id[0] = '\0';
        snprintf(r->message, sizeof(r->message),
                 "%lld entries (seq %lld..%lld, %lld redacted), %lld signed checkpoints", (long long)r->entries,
                 (long long)r->first_seq, (long long)r->last_seq, (long long)r->redacted, (long long)r->checkpoints);
out:
        json_decref(manifest);
        free(chain);
        files_free(&b);
}
