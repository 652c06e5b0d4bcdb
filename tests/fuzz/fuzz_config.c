/* fuzz_config - the configuration parser (core/config_file.c) on the input
 * as a file's content, then what start-up does with what it read: the
 * core's keys declared, validation (core keys first, then all), and the
 * typed settings (settings.c).
 *
 * Input: the file's content; after the first NUL byte, NUL-separated -o
 * overrides ("section.key=value", "section.key+=value").
 *
 * Includes cannot leave the temporary folder: in each line that contains
 * "include", every '/' becomes '_', so a pattern only names entries of the
 * file's own folder.  That folder holds the file (relay.conf) and two small
 * drop-ins, a.conf and b.conf (which includes a.conf). */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config_file.h"
#include "settings.h"
#include "storage.h"

#define MAX_OVERRIDES 16

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[PATH_MAX], path[PATH_MAX];

static int remove_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) { return remove(p); }

static void cleanup(void)
{
        if (*dir)
                nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void put_file(const char *name, const char *text)
{
        char p[PATH_MAX];
        snprintf(p, sizeof(p), "%s/%s", dir, name);
        FILE *f = fopen(p, "w");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0) {
                fprintf(stderr, "fuzz_config: %s: %s\n", p, strerror(errno));
                exit(1);
        }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/relay-fuzz-config.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
                fprintf(stderr, "fuzz_config: mkdtemp: %s\n", strerror(errno));
                exit(1);
        }
        atexit(cleanup);
        snprintf(path, sizeof(path), "%s/relay.conf", dir);
        put_file("a.conf", "[server]\nname = \"from a.conf\" # quoted\n[limits]\nmax_body_size = 2m\n");
        put_file("b.conf", "; a drop-in\n[plugins]\nload += users\ninclude a.conf\n");
        return 0;
}

/* Writes the file, with '/' neutralised in any line that may be an include. */
static void write_input(const char *text, size_t len)
{
        FILE *f = fopen(path, "w");
        if (!f)
                abort();
        for (const char *p = text, *end = text + len; p < end;) {
                const char *nl = memchr(p, '\n', (size_t)(end - p));
                size_t n = nl ? (size_t)(nl - p) + 1 : (size_t)(end - p);
                if (memmem(p, n, "include", 7)) {
                        for (size_t i = 0; i < n; i++)
                                fputc(p[i] == '/' ? '_' : p[i], f);
                } else {
                        fwrite(p, 1, n, f);
                }
                p += n;
        }
        if (fclose(f) != 0)
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const char *text = (const char *)data;
        const char *nul = memchr(text, '\0', size);
        size_t file_len = nul ? (size_t)(nul - text) : size;
        write_input(text, file_len);

        /* The overrides, each copied so it ends with a NUL. */
        char *copy = NULL, *overrides[MAX_OVERRIDES];
        size_t n = 0;
        if (nul) {
                size_t rest = size - file_len - 1;
                copy = malloc(rest + 1);
                if (!copy)
                        return 0;
                memcpy(copy, nul + 1, rest);
                copy[rest] = '\0';
                for (char *p = copy; p <= copy + rest && n < MAX_OVERRIDES; p += strlen(p) + 1)
                        overrides[n++] = p;
        }

        char err[2048];
        conf *c = conf_load(path, overrides, n, err, sizeof(err));
        free(copy);
        if (!c)
                return 0;
        /* As daemon_setup: core keys, their check, then everything. */
        if (settings_declare(c, "/nonexistent/plugins") != 0 || storage_declare(c, "/nonexistent/storage") != 0 ||
            conf_validate(c, true, err, sizeof(err)) != 0 || conf_validate(c, false, err, sizeof(err)) != 0) {
                conf_free(c);
                return 0;
        }
        settings *s = settings_from_conf(c, err, sizeof(err));
        if (!s)
                return 0; /* it freed C */
        char word[512];
        for (size_t i = 0; conf_list_item(conf_get(c, "server", "listen"), i, word, sizeof(word)); i++)
                ;
        settings_free(s); /* and C with it */
        return 0;
}
