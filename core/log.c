/* log.c - one write(2) per line, so lines from several threads never mix. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <jansson.h>
#include "log.h"
#include "relay/util.h"

static int log_fd = STDERR_FILENO;
static int log_level = RELAY_LOG_INFO;
static int log_fmt = LOG_FORMAT_TEXT;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_parse_level(const char *s, relay_log_level *out)
{
        for (int i = 0; i < 4; i++)
                if (strcasecmp(s, level_names[i]) == 0) {
                        *out = (relay_log_level)i;
                        return 0;
                }
        return -1;
}

int log_configure(const char *path, relay_log_level level, log_format format, char *err, size_t err_len)
{
        if (path && *path) {
                int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
                if (fd < 0) {
                        snprintf(err, err_len, "cannot open log file %s: %s", path, strerror(errno));
                        return -1;
                }
                int target = __atomic_load_n(&log_fd, __ATOMIC_RELAXED);
                if (target == STDERR_FILENO) {
                        __atomic_store_n(&log_fd, fd, __ATOMIC_RELEASE);
                } else {
                        dup2(fd, target); /* atomic swap under concurrent writers */
                        close(fd);
                }
        }
        __atomic_store_n(&log_level, (int)level, __ATOMIC_RELAXED);
        __atomic_store_n(&log_fmt, (int)format, __ATOMIC_RELAXED);
        return 0;
}

bool log_enabled(relay_log_level level) { return (int)level <= __atomic_load_n(&log_level, __ATOMIC_RELAXED); }

static void write_all(const char *p, size_t n)
{
        int fd = __atomic_load_n(&log_fd, __ATOMIC_ACQUIRE);
        while (n > 0) {
                ssize_t w = write(fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return;
                p += w;
                n -= (size_t)w;
        }
}

void log_vwrite(relay_log_level level, const char *source, const char *request_id, const char *fmt, va_list ap)
{
        if (!log_enabled(level))
                return;
        char msg[2048], ts[40], line[3072];
        int n = vsnprintf(msg, sizeof(msg), fmt, ap);
        if (n < 0)
                return;
        for (char *p = msg; *p; p++) /* one entry, one line */
                if (*p == '\n' || *p == '\r')
                        *p = ' ';
        relay_time_format(relay_now_ms(), ts, sizeof(ts));
        if (__atomic_load_n(&log_fmt, __ATOMIC_RELAXED) == LOG_FORMAT_JSON) {
                json_t *o = json_pack("{s:s,s:s,s:s,s:s}", "ts", ts, "level", level_names[level], "source", source,
                                      "msg", msg);
                if (request_id)
                        json_object_set_new(o, "request_id", json_string(request_id));
                char *s = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
                json_decref(o);
                if (!s)
                        return;
                n = snprintf(line, sizeof(line), "%s\n", s);
                free(s);
        } else if (request_id) {
                n = snprintf(line, sizeof(line), "%s %s [%s] req=%s %s\n", ts, level_names[level], source, request_id,
                             msg);
        } else {
                n = snprintf(line, sizeof(line), "%s %s [%s] %s\n", ts, level_names[level], source, msg);
        }
        if (n > 0)
                write_all(line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

void log_write(relay_log_level level, const char *source, const char *request_id, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        log_vwrite(level, source, request_id, fmt, ap);
        va_end(ap);
}
