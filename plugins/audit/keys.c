/* keys.c - the Ed25519 key that signs checkpoints, receipts and bundle
 * manifests.  It lives in [audit] signing_key_file (default
 * <data_dir>/audit-signing.key), created 0600 on first start: base64 of
 * the 64-byte secret key on one line.  Daemons that share a PostgreSQL
 * database should share the file, so one public key verifies all. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include "audit.h"

audit_key audit_signing_key;

static void key_path(relay_plugin *p, char *out, size_t len)
{
        const char *f = relay_conf_string(p, "signing_key_file");
        if (f && *f)
                snprintf(out, len, "%s", f);
        else
                snprintf(out, len, "%s/audit-signing.key", relay_data_dir());
}

static int key_create(relay_plugin *p, const char *path)
{
        crypto_sign_keypair(audit_signing_key.pk, audit_signing_key.sk);
        char b64[sodium_base64_ENCODED_LEN(64, sodium_base64_VARIANT_ORIGINAL)];
        sodium_bin2base64(b64, sizeof(b64), audit_signing_key.sk, 64, sodium_base64_VARIANT_ORIGINAL);
        const char *f = relay_conf_string(p, "signing_key_file");
        if (!(f && *f))
                mkdir(relay_data_dir(), 0750); /* the default place: data_dir may not exist yet (PostgreSQL) */
        int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
        if (fd < 0) {
                relay_log(p, RELAY_LOG_ERROR, "cannot create the signing key %s: %s", path, strerror(errno));
                return RELAY_ERR;
        }
        size_t n = strlen(b64);
        b64[n++] = '\n';
        bool ok = write(fd, b64, n) == (ssize_t)n && fsync(fd) == 0;
        ok = close(fd) == 0 && ok;
        sodium_memzero(b64, sizeof(b64));
        if (!ok) {
                relay_log(p, RELAY_LOG_ERROR, "cannot write the signing key %s", path);
                unlink(path);
                return RELAY_ERR;
        }
        relay_log(p, RELAY_LOG_INFO, "created the audit signing key %s", path);
        return RELAY_OK;
}

static int key_read(relay_plugin *p, const char *path, FILE *f)
{
        char line[200];
        size_t n = 0;
        bool ok = fgets(line, sizeof(line), f) &&
                  sodium_base642bin(audit_signing_key.sk, 64, line, strlen(line), " \t\r\n", &n, NULL,
                                    sodium_base64_VARIANT_ORIGINAL) == 0 &&
                  n == 64;
        sodium_memzero(line, sizeof(line));
        if (!ok) {
                relay_log(p, RELAY_LOG_ERROR, "%s is not an audit signing key (base64 of 64 bytes on one line)", path);
                return RELAY_ERR;
        }
        crypto_sign_ed25519_sk_to_pk(audit_signing_key.pk, audit_signing_key.sk);
        return RELAY_OK;
}

int audit_key_load(relay_plugin *p, bool create)
{
        char path[1024];
        key_path(p, path, sizeof(path));
        FILE *f = fopen(path, "r");
        int rc;
        if (f) {
                rc = key_read(p, path, f);
                fclose(f);
        } else if (errno == ENOENT && create) {
                rc = key_create(p, path);
        } else if (errno == ENOENT) {
                relay_log(p, RELAY_LOG_ERROR,
                          "no signing key at %s (the daemon makes it on first start; is this its data_dir?)", path);
                rc = RELAY_ERR;
        } else {
                relay_log(p, RELAY_LOG_ERROR, "cannot read the signing key %s: %s", path, strerror(errno));
                rc = RELAY_ERR;
        }
        if (rc != RELAY_OK)
                return rc;
        unsigned char h[32];
        char hex[65];
        crypto_hash_sha256(h, audit_signing_key.pk, 32);
        sodium_bin2hex(hex, sizeof(hex), h, sizeof(h));
        snprintf(audit_signing_key.key_id, sizeof(audit_signing_key.key_id), "%.16s", hex);
        sodium_bin2base64(audit_signing_key.pk_b64, sizeof(audit_signing_key.pk_b64), audit_signing_key.pk, 32,
                          sodium_base64_VARIANT_ORIGINAL);
        return RELAY_OK;
}

void audit_sign(const void *msg, size_t len, char *out, size_t out_len)
{
        unsigned char sig[crypto_sign_BYTES];
        crypto_sign_detached(sig, NULL, msg, len, audit_signing_key.sk);
        sodium_bin2base64(out, out_len, sig, sizeof(sig), sodium_base64_VARIANT_ORIGINAL);
}
