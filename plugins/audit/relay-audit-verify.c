/* relay-audit-verify - checks an evidence bundle offline, with nothing but
 * the bundle and the public key (GET /v1/audit/key, `relayctl audit key`).
 *
 *   relay-audit-verify --public-key KEY BUNDLE.tar.gz
 *   relay-audit-verify --public-key-file FILE BUNDLE.tar.gz
 *
 * Exit 0: valid.  1: not valid (the first bad entry is named).  2: usage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>
#include "verify.h"

static void usage(FILE *f)
{
        fprintf(f, "usage: relay-audit-verify (--public-key BASE64 | --public-key-file FILE) BUNDLE.tar.gz\n"
                   "Checks an evidence bundle of Relay's audit plugin: the manifest's signature, every\n"
                   "entry's hash chain and every signed checkpoint.  Exit 0 valid, 1 not valid, 2 usage.\n");
}

static char *slurp(const char *path, size_t *len)
{
        FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
        if (!f)
                return NULL;
        size_t cap = 65536, n = 0;
        char *data = malloc(cap + 1);
        size_t got;
        while (data && (got = fread(data + n, 1, cap - n, f)) > 0) {
                n += got;
                if (n == cap) {
                        char *d = realloc(data, cap * 2 + 1);
                        if (!d) {
                                free(data);
                                data = NULL;
                                break;
                        }
                        data = d;
                        cap *= 2;
                }
        }
        if (f != stdin)
                fclose(f);
        if (data)
                data[n] = '\0';
        *len = n;
        return data;
}

int main(int argc, char **argv)
{
        const char *key = NULL, *key_file = NULL, *bundle = NULL;
        for (int i = 1; i < argc; i++) {
                if (strcmp(argv[i], "--public-key") == 0 && i + 1 < argc)
                        key = argv[++i];
                else if (strcmp(argv[i], "--public-key-file") == 0 && i + 1 < argc)
                        key_file = argv[++i];
                else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
                        return usage(stdout), 0;
                else if (argv[i][0] == '-' && argv[i][1])
                        return usage(stderr), 2;
                else if (!bundle)
                        bundle = argv[i];
                else
                        return usage(stderr), 2;
        }
        if (!bundle || (!key == !key_file))
                return usage(stderr), 2;
        if (sodium_init() < 0)
                return fprintf(stderr, "relay-audit-verify: libsodium failed to start\n"), 2;
        size_t key_len = 0, len = 0;
        char *key_text = key_file ? slurp(key_file, &key_len) : NULL;
        unsigned char pk[32];
        if (!audit_public_key_decode(key ? key : key_text ? key_text : "", pk)) {
                fprintf(stderr, "relay-audit-verify: the public key is not base64 of 32 bytes\n");
                free(key_text);
                return 2;
        }
        free(key_text);
        char *data = slurp(bundle, &len);
        if (!data) {
                fprintf(stderr, "relay-audit-verify: cannot read %s\n", bundle);
                return 2;
        }
        audit_verify_result r;
        audit_verify_bundle(data, len, pk, &r);
        free(data);
        if (r.ok) {
                printf("OK: %s (key %s)\n", r.message, r.key_id);
                return 0;
        }
        printf("FAIL: %s\n", r.message);
        return 1;
}
