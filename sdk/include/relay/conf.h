/* relay/conf.h - a plugin's configuration section.
 *
 * Each plugin owns the section named after it ([webhooks]).  It declares its
 * keys in init(); the daemon then rejects unknown keys and bad values with
 * file:line, and `-o webhooks.key=value` overrides them like any other.
 * Every section also accepts `mount = /prefix` (handled by the daemon). */
#ifndef RELAY_CONF_H
#define RELAY_CONF_H

#include <stdbool.h>
#include <relay/common.h>

RELAY_BEGIN_DECLS

typedef enum {
        RELAY_CONF_STRING = 0,
        RELAY_CONF_INT = 1,      /* decimal, may be negative */
        RELAY_CONF_BOOL = 2,     /* true/false, yes/no, on/off, 1/0 */
        RELAY_CONF_SIZE = 3,     /* bytes, with k/m/g suffixes (1024-based) */
        RELAY_CONF_DURATION = 4, /* ms, s, m, h, d suffixes; a bare number is seconds */
        RELAY_CONF_LIST = 5      /* whitespace-separated words; `key += more` appends */
} relay_conf_type;

/* Declare KEY with a default (NULL: no default, read as empty/0). */
RELAY_API int relay_conf_declare(relay_plugin *p, const char *key, relay_conf_type type, const char *default_value,
                                 const char *help);

/* Values of the configuration in force (reload() sees the new one).  Strings
 * stay valid until the plugin stops. */
RELAY_API const char *relay_conf_string(relay_plugin *p, const char *key);
RELAY_API int64_t relay_conf_int(relay_plugin *p, const char *key);
RELAY_API bool relay_conf_bool(relay_plugin *p, const char *key);
RELAY_API uint64_t relay_conf_size(relay_plugin *p, const char *key);
RELAY_API uint64_t relay_conf_duration_ms(relay_plugin *p, const char *key);
/* Copies word I of a list into OUT; returns 0 past the end of the list. */
RELAY_API int relay_conf_list_item(relay_plugin *p, const char *key, size_t i, char *out, size_t out_len);

RELAY_END_DECLS
#endif
