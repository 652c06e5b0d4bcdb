/* relay/driver.h - the storage driver interface (storage/sqlite,
 * storage/pgsql).  Plugins never include this: they use relay/db.h.
 *
 * A driver is a module exporting one descriptor, loaded like a plugin from
 * [storage] dir.  The core owns connections' life (one per thread, opened
 * lazily, reopened with backoff after a loss), transactions, parameter
 * typing and results; a driver runs one statement at a time on one
 * connection and fills a result through the relay_dbres_* builder. */
#ifndef RELAY_DRIVER_H
#define RELAY_DRIVER_H

#include <relay/common.h>
#include <relay/db.h>
#include <relay/version.h>

RELAY_BEGIN_DECLS

#define RELAY_DRIVER_MAGIC 0x52445256u /* "RDRV" */

/* One bound parameter.  JSON parameters arrive as text. */
typedef struct relay_db_param {
        char type; /* 'i' int64, 'd' double, 's' text, 'b' blob, 'n' null */
        int64_t i;
        double d;
        const char *s; /* text (NUL-terminated) or blob bytes */
        size_t len;
} relay_db_param;

/* The driver's settings, from [storage]. */
typedef struct relay_driver_config {
        uint32_t size;
        const char *path; /* sqlite: database file */
        const char *dsn;  /* pgsql: libpq connection string */
        uint64_t busy_timeout_ms;
        const char *synchronous; /* sqlite: off, normal, full */
        uint64_t connect_timeout_ms;
        int statement_cache; /* prepared statements kept per connection */
        void *reserved[4];
} relay_driver_config;

typedef struct relay_driver_conn relay_driver_conn; /* the driver's own */

typedef struct relay_storage_driver {
        uint32_t magic;
        uint16_t abi_major, abi_minor;
        uint32_t size;
        const char *name;    /* "sqlite" */
        const char *dialect; /* "sqlite" or "pgsql": what SQL the plugins write */

        relay_driver_conn *(*open)(const relay_driver_config *cfg, char *err, size_t err_len);
        void (*close)(relay_driver_conn *c);
        /* Runs SQL with `?` placeholders.  OUT may be NULL.  Returns a
         * relay_db_status; on failure ERR holds the engine's message. */
        int (*exec)(relay_driver_conn *c, const char *sql, const relay_db_param *params, size_t n, relay_db_result *out,
                    char *err, size_t err_len);
        /* After RELAY_DB_UNAVAILABLE: try to get the connection back. */
        int (*reconnect)(relay_driver_conn *c, char *err, size_t err_len);
        /* Optional (ABI 1.4): the thread that owns C is about to wait for
         * I/O, with no transaction of the core's open.  A driver may end
         * what it keeps open between statements (sqlite: the read
         * transaction the reads of one loop turn share). */
        void (*idle)(relay_driver_conn *c);
        void *reserved[7];
} relay_storage_driver;

#define RELAY_STORAGE_DRIVER(id, ...)                                                                               \
        RELAY_API const relay_storage_driver id##_LTX_relay_storage_driver = {.magic = RELAY_DRIVER_MAGIC,          \
                                                                              .abi_major = RELAY_SDK_ABI_MAJOR,     \
                                                                              .abi_minor = RELAY_SDK_ABI_MINOR,     \
                                                                              .size = sizeof(relay_storage_driver), \
                                                                              .name = #id,                          \
                                                                              __VA_ARGS__};

/* Result builder: columns first, then rows cell by cell. */
RELAY_API int relay_dbres_columns(relay_db_result *r, size_t n);
RELAY_API int relay_dbres_column_name(relay_db_result *r, size_t col, const char *name);
RELAY_API int relay_dbres_row(relay_db_result *r);
RELAY_API int relay_dbres_null(relay_db_result *r, size_t col);
RELAY_API int relay_dbres_int(relay_db_result *r, size_t col, int64_t v);
RELAY_API int relay_dbres_double(relay_db_result *r, size_t col, double v);
RELAY_API int relay_dbres_text(relay_db_result *r, size_t col, const char *s, size_t len);
RELAY_API int relay_dbres_blob(relay_db_result *r, size_t col, const void *p, size_t len);
RELAY_API void relay_dbres_changes(relay_db_result *r, int64_t n);

/* A string-keyed map for drivers' statement caches. */
typedef struct relay_map relay_map;
RELAY_API relay_map *relay_map_new(void);
RELAY_API void *relay_map_get(relay_map *m, const char *key);
/* Stores VALUE under a copy of KEY; returns the value it replaced. */
RELAY_API void *relay_map_put(relay_map *m, const char *key, void *value);
RELAY_API size_t relay_map_count(relay_map *m);
/* Calls FN on every value, then frees the map. */
RELAY_API void relay_map_free(relay_map *m, void (*fn)(void *value));

RELAY_END_DECLS
#endif
