/* harness.h - what the HTTP fuzz targets share (fuzz_http, fuzz_json_routes).
 *
 * fuzz_setup() brings a daemon up the way relay-server does (configuration
 * file, plugins, SQLite storage and migrations, plugins started), all in a
 * temporary folder, with one worker whose loop runs on the fuzzer's thread.
 * fuzz_exchange() then plays a client: it opens a connection on that worker
 * through the core's test seam (relay__conn_open, over a socketpair), sends
 * the chunks one read each, ends the connection as OPTS say, and runs the
 * loop until the server has closed it and every request is finished, so
 * nothing carries over to the next input but the database.
 *
 * Environment: RELAY_FUZZ_LOG=1 keeps the daemon's log on stderr (debug
 * level; otherwise it goes to /dev/null), RELAY_FUZZ_PLUGINS replaces the
 * list of plugins to load, RELAY_FUZZ_BUILDDIR the build tree they come from. */
#ifndef RELAY_FUZZ_HARNESS_H
#define RELAY_FUZZ_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "buf.h"

/* How the client ends the exchange once everything is sent (or, REFUSED,
 * how it starts). */
enum {
        FUZZ_TIMEOUTS = 1, /* every timeout expires first (408s, idle closes) */
        FUZZ_DRAIN = 2,    /* a graceful shutdown starts first (SIGTERM) */
        FUZZ_ABORT = 4,    /* the client closes without reading the replies */
        FUZZ_REFUSED = 8   /* the connection arrives while the worker drains (503) */
};

/* The replacements fuzz_expand() makes (credentials of a bootstrapped tenant). */
#define FUZZ_APIKEY "@APIKEY@"
#define FUZZ_TOKEN "@TOKEN@"

/* Once, from LLVMFuzzerInitialize(); exits with a message on failure. */
void fuzz_setup(void);

/* Sends N chunks (one read each on the server), then ends as OPTS say;
 * REPLY (may be NULL) receives what the server wrote, up to 1 MiB. */
void fuzz_exchange(const char *const *chunks, const size_t *lens, size_t n, int opts, buf *reply);

/* DATA with FUZZ_APIKEY and FUZZ_TOKEN replaced by a live admin API key and
 * a bearer token of it, into OUT (reset first).  Expansion stops at 60 KiB. */
void fuzz_expand(const uint8_t *data, size_t len, buf *out);

/* The admin API key of the bootstrapped tenant ("" without the users plugin). */
const char *fuzz_api_key(void);

/* Is plugin NAME one of the test plugins (tests/plugins), not a product's? */
bool fuzz_test_plugin(const char *name);

/* Status code of the first response in REPLY, or 0. */
int fuzz_status(const buf *reply);

#endif
