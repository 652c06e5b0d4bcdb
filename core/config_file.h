/* config_file.h - the configuration: INI-style files with includes, command
 * line overrides, and a schema that rejects unknown keys and bad values.
 *
 *   # comment                 ; comment
 *   [server]
 *   listen = 127.0.0.1:8080 [::1]:8080
 *   [plugins]
 *   load += webhooks          # += appends to a list
 *   include conf.d/NAME.conf  # glob patterns allowed; relative to this file;
 *                             # sorted; a pattern may match nothing
 *
 * The last assignment of a key wins, so a drop-in overrides the main file. */
#ifndef RELAY_CONFIG_FILE_H
#define RELAY_CONFIG_FILE_H

#include <stdbool.h>
#include <stdint.h>
#include "relay/conf.h"

typedef struct conf_entry {
        struct conf_entry *next;
        char *section, *key, *value;
        char *file; /* "<command line>" for -o */
        int line;
} conf_entry;

/* A key the configuration may hold: the core's own, or one a plugin
 * declared.  `check` validates values beyond the type (NULL: none) and
 * returns an error message or NULL. */
typedef const char *(*conf_check_fn)(const char *value);

typedef struct conf_key {
        struct conf_key *next;
        char *section, *key, *default_value, *help;
        relay_conf_type type;
        conf_check_fn check;
} conf_key;

typedef struct conf {
        conf_entry *entries, *last;
        conf_key *keys;
        char *main_file;
        int refs;
} conf;

/* Reads FILE (and its includes) and then the -o overrides ("s.k=v", "s.k+=v").
 * On error returns NULL and writes "file:line: reason" into ERR. */
conf *conf_load(const char *file, char *const *overrides, size_t n_overrides, char *err, size_t err_len);
void conf_free(conf *c);

int conf_declare(conf *c, const char *section, const char *key, relay_conf_type type, const char *default_value,
                 const char *help, conf_check_fn check);

/* A row of a table of keys, for parts that declare many at once. */
typedef struct conf_key_def {
        const char *section, *key;
        relay_conf_type type;
        const char *default_value;
        conf_check_fn check;
        const char *help;
} conf_key_def;

int conf_declare_table(conf *c, const conf_key_def *defs, size_t n);
bool conf_find_key(const conf *c, const char *section, const char *key);
/* Changes the default of a declared key (a plugin's own rate limit). */
int conf_set_default(conf *c, const char *section, const char *key, const char *value);
/* Copies the declared keys of FROM into C (after a reload). */
int conf_copy_keys(conf *c, const conf *from);
/* Every entry's section and key declared, every value of the right type.
 * DECLARED_ONLY: skip entries of sections nothing has declared yet (the
 * core's keys are checked before plugins declare theirs). */
int conf_validate(const conf *c, bool declared_only, char *err, size_t err_len);
bool conf_has_section(const conf *c, const char *section);

/* Values: the last assignment, else the declared default, else NULL. */
const char *conf_get(const conf *c, const char *section, const char *key);
const conf_entry *conf_find(const conf *c, const char *section, const char *key);
int64_t conf_get_int(const conf *c, const char *section, const char *key);
bool conf_get_bool(const conf *c, const char *section, const char *key);
uint64_t conf_get_size(const conf *c, const char *section, const char *key);
uint64_t conf_get_duration_ms(const conf *c, const char *section, const char *key);
/* Word I of a list value (copied into OUT), or false past its end. */
bool conf_list_item(const char *value, size_t i, char *out, size_t out_len);

/* Typed parsers, shared with validation: 0 on success. */
int conf_parse_int(const char *s, int64_t *out);
int conf_parse_bool(const char *s, bool *out);
int conf_parse_size(const char *s, uint64_t *out);
int conf_parse_duration_ms(const char *s, uint64_t *out);

#endif
