/* log.h - the daemon's log: text or JSON lines on stderr or a file. */
#ifndef RELAY_CORE_LOG_H
#define RELAY_CORE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include "relay/log.h"

typedef enum { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON = 1 } log_format;

/* (Re)opens PATH (NULL or "": stderr) and sets level and format.  Safe
 * while other threads log: the file is swapped in with dup2(). */
int log_configure(const char *path, relay_log_level level, log_format format, char *err, size_t err_len);
int log_parse_level(const char *s, relay_log_level *out);
bool log_enabled(relay_log_level level);

/* SOURCE is "core" or a plugin name; REQUEST_ID may be NULL. */
void log_write(relay_log_level level, const char *source, const char *request_id, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
void log_vwrite(relay_log_level level, const char *source, const char *request_id, const char *fmt, va_list ap)
        __attribute__((format(printf, 4, 0)));

#define log_error(...) log_write(RELAY_LOG_ERROR, "core", NULL, __VA_ARGS__)
#define log_warn(...) log_write(RELAY_LOG_WARN, "core", NULL, __VA_ARGS__)
#define log_info(...) log_write(RELAY_LOG_INFO, "core", NULL, __VA_ARGS__)
#define log_debug(...) log_write(RELAY_LOG_DEBUG, "core", NULL, __VA_ARGS__)

#endif
