/* secret.c - signing secrets.
 *
 * An endpoint's secret is "whsec_" + base64 of 32 random bytes (Standard
 * Webhooks); the bytes are the HMAC-SHA256 key.  They cannot be hashed
 * (they must sign), so they are stored sealed with crypto_secretbox under
 * a key the database never sees: [webhooks] secret_key_file, 32 random
 * bytes made 0600 on the first start.  A copy of the database alone
 * reveals no secret.  Secrets never reach the log. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <sodium.h>
#include "webhooks.h"

static uint8_t master[crypto_secretbox_KEYBYTES];
static bool have_master;

static int read_all(int fd, uint8_t *buf, size_t len)
{
        size_t got = 0;
        while (got < len) {
                ssize_t n = read(fd, buf + got, len - got);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                got += (size_t)n;
        }
        uint8_t extra;
        return read(fd, &extra, 1) == 0 ? 0 : -1; /* exactly LEN bytes */
}

static int write_all(int fd, const uint8_t *buf, size_t len)
{
        size_t put = 0;
        while (put < len) {
                ssize_t n = write(fd, buf + put, len - put);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -1;
                put += (size_t)n;
        }
        return 0;
}

int wh_key_load(relay_plugin *p)
{
        if (sodium_init() < 0)
                return RELAY_ERR;
        const char *conf = relay_conf_string(p, "secret_key_file");
        char path[4096];
        if (conf && *conf)
                snprintf(path, sizeof(path), "%s", conf);
        else {
                mkdir(relay_data_dir(), 0700); /* the daemon's folder; it may not exist yet */
                snprintf(path, sizeof(path), "%s/webhooks.key", relay_data_dir());
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                int rc = read_all(fd, master, sizeof(master));
                close(fd);
                if (rc != 0) {
                        relay_log(p, RELAY_LOG_ERROR, "%s: expected exactly %d bytes (a key made by relay)", path,
                                  (int)sizeof(master));
                        return RELAY_ERR;
                }
                have_master = true;
                return RELAY_OK;
        }
        if (errno != ENOENT) {
                relay_log(p, RELAY_LOG_ERROR, "%s: %s", path, strerror(errno));
                return RELAY_ERR;
        }
        /* First start: a new key, written to a temporary file and linked in
         * place, so a crash never leaves half a key and two daemons racing
         * on the same file end up with one key. */
        char tmp[4200];
        snprintf(tmp, sizeof(tmp), "%s.%ld.tmp", path, (long)getpid());
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
                relay_log(p, RELAY_LOG_ERROR, "cannot create %s: %s", tmp, strerror(errno));
                return RELAY_ERR;
        }
        uint8_t fresh[sizeof(master)];
        randombytes_buf(fresh, sizeof(fresh));
        int rc = write_all(fd, fresh, sizeof(fresh)) == 0 && fsync(fd) == 0 ? 0 : -1;
        close(fd);
        if (rc == 0 && link(tmp, path) != 0 && errno != EEXIST)
                rc = -1;
        unlink(tmp);
        sodium_memzero(fresh, sizeof(fresh));
        if (rc != 0) {
                relay_log(p, RELAY_LOG_ERROR, "cannot write %s: %s", path, strerror(errno));
                return RELAY_ERR;
        }
        relay_log(p, RELAY_LOG_INFO, "made a new secret key in %s (keep it: the endpoints' secrets need it)", path);
        return wh_key_load(p); /* read back what won, ours or a racing daemon's */
}

void wh_key_forget(void)
{
        sodium_memzero(master, sizeof(master));
        have_master = false;
}

void wh_secret_new(uint8_t key[WH_KEY_BYTES], char text[WH_SECRET_LEN])
{
        randombytes_buf(key, WH_KEY_BYTES);
        memcpy(text, WH_SECRET_PREFIX, sizeof(WH_SECRET_PREFIX) - 1);
        sodium_bin2base64(text + sizeof(WH_SECRET_PREFIX) - 1, WH_SECRET_LEN - (sizeof(WH_SECRET_PREFIX) - 1), key,
                          WH_KEY_BYTES, sodium_base64_VARIANT_ORIGINAL);
}

char *wh_secret_seal(const uint8_t key[WH_KEY_BYTES])
{
        if (!have_master)
                return NULL;
        uint8_t sealed[crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + WH_KEY_BYTES];
        randombytes_buf(sealed, crypto_secretbox_NONCEBYTES);
        crypto_secretbox_easy(sealed + crypto_secretbox_NONCEBYTES, key, WH_KEY_BYTES, sealed, master);
        size_t n = sodium_base64_ENCODED_LEN(sizeof(sealed), sodium_base64_VARIANT_ORIGINAL);
        char *out = malloc(n);
        if (out)
                sodium_bin2base64(out, n, sealed, sizeof(sealed), sodium_base64_VARIANT_ORIGINAL);
        return out;
}

int wh_secret_open(const char *text, uint8_t key[WH_KEY_BYTES])
{
        uint8_t sealed[crypto_secretbox_NONCEBYTES + crypto_secretbox_MACBYTES + WH_KEY_BYTES];
        size_t len = 0;
        if (!have_master || !text ||
            sodium_base642bin(sealed, sizeof(sealed), text, strlen(text), NULL, &len, NULL,
                              sodium_base64_VARIANT_ORIGINAL) != 0 ||
            len != sizeof(sealed))
                return RELAY_ERR;
        return crypto_secretbox_open_easy(key, sealed + crypto_secretbox_NONCEBYTES,
                                          sizeof(sealed) - crypto_secretbox_NONCEBYTES, sealed, master) == 0
                       ? RELAY_OK
                       : RELAY_ERR;
}

void wh_sign(const uint8_t key[WH_KEY_BYTES], const char *id, int64_t ts, const char *body, size_t len,
             char out[WH_SIG_LEN])
{
        char stamp[32];
        int n = snprintf(stamp, sizeof(stamp), ".%lld.", (long long)ts);
        crypto_auth_hmacsha256_state st;
        uint8_t mac[crypto_auth_hmacsha256_BYTES];
        crypto_auth_hmacsha256_init(&st, key, WH_KEY_BYTES);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)id, strlen(id));
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)stamp, (unsigned long long)n);
        crypto_auth_hmacsha256_update(&st, (const uint8_t *)body, len);
        crypto_auth_hmacsha256_final(&st, mac);
        memcpy(out, "v1,", 3);
        sodium_bin2base64(out + 3, WH_SIG_LEN - 3, mac, sizeof(mac), sodium_base64_VARIANT_ORIGINAL);
        sodium_memzero(&st, sizeof(st));
}
