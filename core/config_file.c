/* config_file.c - configuration parser, store and schema. */
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config_file.h"

#define MAX_INCLUDE_DEPTH 8
#define MAX_LINE 8192

static void errf(char *err, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t len, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, len, fmt, ap);
        va_end(ap);
}

static char *trim(char *s)
{
        while (isspace((unsigned char)*s))
                s++;
        char *e = s + strlen(s);
        while (e > s && isspace((unsigned char)e[-1]))
                *--e = '\0';
        return s;
}

/* Cuts an inline comment: '#' or ';' preceded by white space, outside quotes. */
static void cut_comment(char *s)
{
        bool quoted = false;
        for (char *p = s; *p; p++) {
                if (*p == '"')
                        quoted = !quoted;
                else if (!quoted && (*p == '#' || *p == ';') && (p == s || isspace((unsigned char)p[-1]))) {
                        *p = '\0';
                        return;
                }
        }
}

/* A value in double quotes keeps its spaces and '#'. */
static char *unquote(char *v)
{
        size_t n = strlen(v);
        if (n >= 2 && v[0] == '"' && v[n - 1] == '"') {
                v[n - 1] = '\0';
                return v + 1;
        }
        return v;
}

static conf_entry *entry_add(conf *c, const char *section, const char *key, const char *value, const char *file,
                             int line)
{
        conf_entry *e = calloc(1, sizeof(*e));
        if (!e)
                return NULL;
        e->section = strdup(section);
        e->key = strdup(key);
        e->value = strdup(value);
        e->file = strdup(file);
        e->line = line;
        if (!e->section || !e->key || !e->value || !e->file) {
                free(e->section), free(e->key), free(e->value), free(e->file), free(e);
                return NULL;
        }
        if (c->last)
                c->last->next = e;
        else
                c->entries = e;
        c->last = e;
        return e;
}

const conf_entry *conf_find(const conf *c, const char *section, const char *key)
{
        const conf_entry *found = NULL;
        for (const conf_entry *e = c->entries; e; e = e->next)
                if (strcmp(e->section, section) == 0 && strcmp(e->key, key) == 0)
                        found = e;
        return found;
}

/* key += value: the current value (or the default) followed by VALUE. */
static int assign(conf *c, const char *section, const char *key, const char *value, bool append, const char *file,
                  int line)
{
        if (!append)
                return entry_add(c, section, key, value, file, line) ? 0 : -1;
        const char *cur = conf_get(c, section, key);
        if (!cur || !*cur)
                return entry_add(c, section, key, value, file, line) ? 0 : -1;
        size_t n = strlen(cur) + strlen(value) + 2;
        char *joined = malloc(n);
        if (!joined)
                return -1;
        snprintf(joined, n, "%s %s", cur, value);
        int rc = entry_add(c, section, key, joined, file, line) ? 0 : -1;
        free(joined);
        return rc;
}

static int parse_file(conf *c, const char *path, int depth, char *err, size_t err_len);

static int include_glob(conf *c, const char *from, int line, const char *pattern, int depth, char *err, size_t err_len)
{
        char full[PATH_MAX];
        if (pattern[0] == '/') {
                snprintf(full, sizeof(full), "%s", pattern);
        } else {
                const char *slash = strrchr(from, '/');
                int dirlen = slash ? (int)(slash - from) : 1;
                snprintf(full, sizeof(full), "%.*s/%s", dirlen, slash ? from : ".", pattern);
        }
        glob_t g;
        int rc = glob(full, 0, NULL, &g);
        if (rc == GLOB_NOMATCH)
                return 0; /* an empty drop-in folder is fine */
        if (rc != 0) {
                errf(err, err_len, "%s:%d: cannot read include %s", from, line, full);
                return -1;
        }
        for (size_t i = 0; i < g.gl_pathc; i++)
                if (parse_file(c, g.gl_pathv[i], depth + 1, err, err_len) != 0) {
                        globfree(&g);
                        return -1;
                }
        globfree(&g);
        return 0;
}

static int parse_line(conf *c, const char *path, int lineno, char *line, char *section, size_t section_len, int depth,
                      char *err, size_t err_len)
{
        cut_comment(line);
        char *s = trim(line);
        if (!*s)
                return 0;
        if (*s == '[') {
                char *end = strchr(s, ']');
                if (!end || end[1] != '\0' || end == s + 1) {
                        errf(err, err_len, "%s:%d: malformed section header", path, lineno);
                        return -1;
                }
                *end = '\0';
                snprintf(section, section_len, "%s", trim(s + 1));
                return 0;
        }
        if (strncmp(s, "include", 7) == 0 && isspace((unsigned char)s[7]))
                return include_glob(c, path, lineno, unquote(trim(s + 7)), depth, err, err_len);
        char *eq = strchr(s, '=');
        if (!eq || eq == s) {
                errf(err, err_len, "%s:%d: expected 'key = value'", path, lineno);
                return -1;
        }
        bool append = eq > s && eq[-1] == '+';
        if (append)
                eq[-1] = '\0';
        *eq = '\0';
        char *key = trim(s), *value = unquote(trim(eq + 1));
        if (!*section) {
                errf(err, err_len, "%s:%d: key '%s' outside any [section]", path, lineno, key);
                return -1;
        }
        if (!*key || strpbrk(key, " \t")) {
                errf(err, err_len, "%s:%d: malformed key", path, lineno);
                return -1;
        }
        if (assign(c, section, key, value, append, path, lineno) != 0) {
                errf(err, err_len, "%s:%d: out of memory", path, lineno);
                return -1;
        }
        return 0;
}

static int parse_file(conf *c, const char *path, int depth, char *err, size_t err_len)
{
        if (depth > MAX_INCLUDE_DEPTH) {
                errf(err, err_len, "%s: includes nested deeper than %d", path, MAX_INCLUDE_DEPTH);
                return -1;
        }
        FILE *f = fopen(path, "r");
        if (!f) {
                errf(err, err_len, "%s: %s", path, strerror(errno));
                return -1;
        }
        char line[MAX_LINE], section[128] = "";
        int lineno = 0, rc = 0;
        while (rc == 0 && fgets(line, sizeof(line), f)) {
                lineno++;
                if (!strchr(line, '\n') && !feof(f)) {
                        errf(err, err_len, "%s:%d: line longer than %d bytes", path, lineno, MAX_LINE - 2);
                        rc = -1;
                        break;
                }
                rc = parse_line(c, path, lineno, line, section, sizeof(section), depth, err, err_len);
        }
        fclose(f);
        return rc;
}

static int apply_override(conf *c, const char *o, char *err, size_t err_len)
{
        const char *dot = strchr(o, '.'), *eq = strchr(o, '=');
        if (!dot || !eq || dot > eq || dot == o || eq == dot + 1) {
                errf(err, err_len, "-o %s: expected section.key=value", o);
                return -1;
        }
        bool append = eq[-1] == '+';
        char section[128], key[128];
        snprintf(section, sizeof(section), "%.*s", (int)(dot - o), o);
        snprintf(key, sizeof(key), "%.*s", (int)(eq - dot - 1 - (append ? 1 : 0)), dot + 1);
        return assign(c, section, key, eq + 1, append, "<command line>", 0);
}

conf *conf_load(const char *file, char *const *overrides, size_t n_overrides, char *err, size_t err_len)
{
        conf *c = calloc(1, sizeof(*c));
        if (!c) {
                errf(err, err_len, "out of memory");
                return NULL;
        }
        c->refs = 1;
        c->main_file = strdup(file ? file : "");
        if (file && parse_file(c, file, 0, err, err_len) != 0)
                goto fail;
        for (size_t i = 0; i < n_overrides; i++)
                if (apply_override(c, overrides[i], err, err_len) != 0)
                        goto fail;
        return c;
fail:
        conf_free(c);
        return NULL;
}

void conf_free(conf *c)
{
        if (!c)
                return;
        for (conf_entry *e = c->entries, *n; e; e = n) {
                n = e->next;
                free(e->section), free(e->key), free(e->value), free(e->file), free(e);
        }
        for (conf_key *k = c->keys, *n; k; k = n) {
                n = k->next;
                free(k->section), free(k->key), free(k->default_value), free(k->help), free(k);
        }
        free(c->main_file);
        free(c);
}

static conf_key *key_find(const conf *c, const char *section, const char *key)
{
        for (conf_key *k = c->keys; k; k = k->next)
                if (strcmp(k->section, section) == 0 && strcmp(k->key, key) == 0)
                        return k;
        return NULL;
}

int conf_declare(conf *c, const char *section, const char *key, relay_conf_type type, const char *default_value,
                 const char *help, conf_check_fn check)
{
        if (key_find(c, section, key))
                return -1;
        conf_key *k = calloc(1, sizeof(*k));
        if (!k)
                return -1;
        k->section = strdup(section);
        k->key = strdup(key);
        k->default_value = default_value ? strdup(default_value) : NULL;
        k->help = help ? strdup(help) : NULL;
        k->type = type;
        k->check = check;
        k->next = c->keys;
        c->keys = k;
        return 0;
}

bool conf_find_key(const conf *c, const char *section, const char *key) { return key_find(c, section, key) != NULL; }

int conf_set_default(conf *c, const char *section, const char *key, const char *value)
{
        conf_key *k = key_find(c, section, key);
        char *v = strdup(value);
        if (!k || !v) {
                free(v);
                return -1;
        }
        free(k->default_value);
        k->default_value = v;
        return 0;
}

int conf_declare_table(conf *c, const conf_key_def *defs, size_t n)
{
        for (size_t i = 0; i < n; i++)
                if (conf_declare(c, defs[i].section, defs[i].key, defs[i].type, defs[i].default_value, defs[i].help,
                                 defs[i].check) != 0)
                        return -1;
        return 0;
}

int conf_copy_keys(conf *c, const conf *from)
{
        for (const conf_key *k = from->keys; k; k = k->next)
                if (!key_find(c, k->section, k->key) &&
                    conf_declare(c, k->section, k->key, k->type, k->default_value, k->help, k->check) != 0)
                        return -1;
        return 0;
}

bool conf_has_section(const conf *c, const char *section)
{
        for (conf_key *k = c->keys; k; k = k->next)
                if (strcmp(k->section, section) == 0)
                        return true;
        return false;
}

static const char *type_error(relay_conf_type type, const char *v)
{
        int64_t i;
        uint64_t u;
        bool b;
        switch (type) {
        case RELAY_CONF_INT: return conf_parse_int(v, &i) ? "expected an integer" : NULL;
        case RELAY_CONF_BOOL: return conf_parse_bool(v, &b) ? "expected true or false" : NULL;
        case RELAY_CONF_SIZE: return conf_parse_size(v, &u) ? "expected a size such as 512, 64k or 1m" : NULL;
        case RELAY_CONF_DURATION:
                return conf_parse_duration_ms(v, &u) ? "expected a duration such as 500ms, 10s or 5m" : NULL;
        default: return NULL;
        }
}

int conf_validate(const conf *c, bool declared_only, char *err, size_t err_len)
{
        for (const conf_entry *e = c->entries; e; e = e->next) {
                const conf_key *k = key_find(c, e->section, e->key);
                if (!k && declared_only && !conf_has_section(c, e->section))
                        continue;
                if (!k) {
                        if (conf_has_section(c, e->section))
                                errf(err, err_len, "%s:%d: unknown key '%s' in [%s]", e->file, e->line, e->key,
                                     e->section);
                        else
                                errf(err, err_len,
                                     "%s:%d: unknown section [%s] (not a core section, nor a loaded plugin)", e->file,
                                     e->line, e->section);
                        return -1;
                }
                const char *why = type_error(k->type, e->value);
                if (!why && k->check)
                        why = k->check(e->value);
                if (why) {
                        errf(err, err_len, "%s:%d: bad value '%s' for %s.%s: %s", e->file, e->line, e->value,
                             e->section, e->key, why);
                        return -1;
                }
        }
        return 0;
}

const char *conf_get(const conf *c, const char *section, const char *key)
{
        const conf_entry *e = conf_find(c, section, key);
        if (e)
                return e->value;
        const conf_key *k = key_find(c, section, key);
        return k ? k->default_value : NULL;
}

int64_t conf_get_int(const conf *c, const char *section, const char *key)
{
        int64_t v = 0;
        const char *s = conf_get(c, section, key);
        if (s)
                conf_parse_int(s, &v);
        return v;
}

bool conf_get_bool(const conf *c, const char *section, const char *key)
{
        bool v = false;
        const char *s = conf_get(c, section, key);
        if (s)
                conf_parse_bool(s, &v);
        return v;
}

uint64_t conf_get_size(const conf *c, const char *section, const char *key)
{
        uint64_t v = 0;
        const char *s = conf_get(c, section, key);
        if (s)
                conf_parse_size(s, &v);
        return v;
}

uint64_t conf_get_duration_ms(const conf *c, const char *section, const char *key)
{
        uint64_t v = 0;
        const char *s = conf_get(c, section, key);
        if (s)
                conf_parse_duration_ms(s, &v);
        return v;
}

bool conf_list_item(const char *value, size_t i, char *out, size_t out_len)
{
        const char *p = value ? value : "";
        for (;;) {
                while (*p && (isspace((unsigned char)*p) || *p == ','))
                        p++;
                if (!*p)
                        return false;
                const char *start = p;
                while (*p && !isspace((unsigned char)*p) && *p != ',')
                        p++;
                if (i-- == 0) {
                        snprintf(out, out_len, "%.*s", (int)(p - start), start);
                        return true;
                }
        }
}

int conf_parse_int(const char *s, int64_t *out)
{
        if (!*s)
                return -1;
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno || *end)
                return -1;
        *out = v;
        return 0;
}

int conf_parse_bool(const char *s, bool *out)
{
        static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off", "0"};
        for (size_t i = 0; i < 4; i++) {
                if (strcasecmp(s, yes[i]) == 0)
                        return *out = true, 0;
                if (strcasecmp(s, no[i]) == 0)
                        return *out = false, 0;
        }
        return -1;
}

/* A non-negative number followed by one of SUFFIXES (multipliers MULT). */
static int parse_scaled(const char *s, const char *const *suffixes, const uint64_t *mult, size_t n, uint64_t bare,
                        uint64_t *out)
{
        if (!isdigit((unsigned char)*s))
                return -1;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno)
                return -1;
        uint64_t m = 0;
        if (!*end)
                m = bare;
        for (size_t i = 0; !m && i < n; i++)
                if (strcasecmp(end, suffixes[i]) == 0)
                        m = mult[i];
        if (!m || v > UINT64_MAX / m)
                return -1;
        *out = v * m;
        return 0;
}

int conf_parse_size(const char *s, uint64_t *out)
{
        static const char *const suf[] = {"b", "k", "kb", "m", "mb", "g", "gb"};
        static const uint64_t mult[] = {1, 1024, 1024, 1 << 20, 1 << 20, 1 << 30, 1 << 30};
        return parse_scaled(s, suf, mult, 7, 1, out);
}

int conf_parse_duration_ms(const char *s, uint64_t *out)
{
        static const char *const suf[] = {"ms", "s", "m", "h", "d"};
        static const uint64_t mult[] = {1, 1000, 60000, 3600000, 86400000};
        return parse_scaled(s, suf, mult, 5, 1000, out);
}
