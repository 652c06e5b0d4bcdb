/* harness.c - a daemon on the fuzzer's thread and a client that talks to it
 * through the real connection code (harness.h). */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "daemon.h"
#include "harness.h"
#include "http.h"
#include "router.h"
#include "worker.h"

#ifndef FUZZ_BUILDDIR
#error "FUZZ_BUILDDIR (the build tree) must be defined"
#endif
#ifndef FUZZ_PLUGINS
#error "FUZZ_PLUGINS (the plugins to load) must be defined"
#endif

#define REPLY_MAX (1024 * 1024)
#define EXPAND_MAX (60 * 1024)
#define QUIET_MS 2000            /* an exchange that has not ended by then is stuck */
#define LATER_MS (86400 * 1000u) /* "every timeout has expired" */

static worker *w;
static char dir[PATH_MAX];
static char api_key[256], token[2048];
static char test_plugins[1024]; /* names of the plugins from tests/plugins */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        fputs("fuzz harness: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        exit(1);
}

static bool loads(const char *list, const char *name);

bool fuzz_test_plugin(const char *name) { return loads(test_plugins, name); }
const char *fuzz_api_key(void) { return api_key; }

/* ------------------------------------------------------------ the client */

/* The client is a plain socket, outside the worker's loop: a graceful
 * shutdown closes every handle of that loop, as it should. */
typedef struct client {
        int fd; /* -1 once closed */
        buf *reply;
        bool eof; /* the server closed its end (or reset it) */
} client;

/* Reads what the server has written so far. */
static void client_read(client *cl)
{
        static char space[65536];
        while (cl->fd >= 0 && !cl->eof) {
                ssize_t n = recv(cl->fd, space, sizeof(space), MSG_DONTWAIT);
                if (n > 0) {
                        if (cl->reply && cl->reply->len + (size_t)n <= REPLY_MAX)
                                buf_append(cl->reply, space, (size_t)n);
                } else if (n < 0 && errno == EINTR) {
                        continue;
                } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                        return;
                } else {
                        cl->eof = true; /* EOF, or a reset when the server left input unread */
                }
        }
}

/* One turn: wait (until DEADLINE at most) for the worker's loop or the
 * client's socket to have something to do, run the loop once without
 * blocking, read the replies. */
static void turn(client *cl, bool want_write, uint64_t deadline)
{
        struct pollfd fds[2] = {{.fd = uv_backend_fd(&w->loop), .events = POLLIN},
                                {.fd = cl->fd, .events = (short)(POLLIN | (want_write ? POLLOUT : 0))}};
        uint64_t now = uv_hrtime();
        int left = now < deadline ? (int)((deadline - now) / 1000000) : 0;
        int timeout = uv_backend_timeout(&w->loop);
        if (timeout < 0 || timeout > left)
                timeout = left;
        poll(fds, cl->fd >= 0 && (!cl->eof || want_write) ? 2 : 1, timeout);
        uv_run(&w->loop, UV_RUN_NOWAIT);
        client_read(cl);
}

/* Sends all of P; false when the server closed, or took nothing for
 * QUIET_MS (the rest is then not sent). */
static bool send_all(client *cl, const char *p, size_t n)
{
        uint64_t deadline = uv_hrtime() + QUIET_MS * 1000000ull;
        while (n) {
                ssize_t k = send(cl->fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (k > 0) {
                        p += k, n -= (size_t)k;
                        deadline = uv_hrtime() + QUIET_MS * 1000000ull;
                } else if (k < 0 && errno == EINTR) {
                        continue;
                } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && uv_hrtime() < deadline) {
                        turn(cl, true, deadline);
                } else {
                        return false; /* EPIPE, ECONNRESET: the server has closed; or it stopped reading */
                }
        }
        return true;
}

/* Nothing left: no connection, no work in the thread pool, no handle
 * closing, and the client has seen the server's end of the connection. */
static bool finished(const client *cl) { return !w->conns && !uv_loop_alive(&w->loop) && (cl->fd < 0 || cl->eof); }

void fuzz_exchange(const char *const *chunks, const size_t *lens, size_t n, int opts, buf *reply)
{
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
                die("socketpair: %s", strerror(errno));
        w->draining = (opts & FUZZ_REFUSED) != 0;
        int rc = relay__conn_open(w, sv[0]);
        if (rc != 0)
                die("relay__conn_open: %s", uv_strerror(rc));
        client cl = {.fd = sv[1], .reply = reply};
        if (reply)
                buf_reset(reply);

        /* One chunk, one read: the server takes each before the next is sent. */
        bool sending = true;
        for (size_t i = 0; i < n && sending; i++) {
                if (lens[i])
                        sending = send_all(&cl, chunks[i], lens[i]);
                uv_run(&w->loop, UV_RUN_NOWAIT);
                client_read(&cl);
        }
        if (opts & FUZZ_TIMEOUTS)
                conn_sweep(w, uv_now(&w->loop) + LATER_MS);
        if (opts & FUZZ_DRAIN) {
                w->draining = true;
                for (conn *c = w->conns, *next; c; c = next) {
                        next = c->next;
                        conn_drain(c);
                }
        }
        if (opts & FUZZ_ABORT) {
                close(cl.fd);
                cl.fd = -1;
        } else {
                shutdown(cl.fd, SHUT_WR); /* the end of the requests: EOF */
        }

        uint64_t deadline = uv_hrtime() + QUIET_MS * 1000000ull;
        while (!finished(&cl)) {
                if (uv_hrtime() >= deadline) {
                        fprintf(stderr, "fuzz check failed: the connection did not end %dms after the client's EOF\n",
                                QUIET_MS);
                        abort();
                }
                turn(&cl, false, deadline);
        }
        if (cl.fd >= 0)
                close(cl.fd);
        w->draining = false;
        if (__atomic_load_n(&relay_daemon.connections, __ATOMIC_RELAXED) != 0) {
                fprintf(stderr, "fuzz check failed: a connection outlived its exchange\n");
                abort();
        }
}

int fuzz_status(const buf *reply)
{
        if (!reply->data || reply->len < 12 || memcmp(reply->data, "HTTP/1.", 7) != 0)
                return 0;
        const char *p = reply->data + 9;
        if (reply->len >= 22 && memcmp(reply->data + 9, "100 Continue", 12) == 0) {
                const char *next = memmem(reply->data, reply->len, "\r\n\r\n", 4);
                if (!next || (size_t)(next + 4 - reply->data) + 12 > reply->len)
                        return 0;
                p = next + 4 + 9;
        }
        return (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
}

void fuzz_expand(const uint8_t *data, size_t len, buf *out)
{
        static const struct {
                const char *name;
                const char *value;
        } subs[] = {{FUZZ_APIKEY, api_key}, {FUZZ_TOKEN, token}};
        buf_reset(out);
        const char *p = (const char *)data, *end = p + len;
        while (p < end) {
                size_t i = 0, nlen = 0;
                for (; i < 2; i++) {
                        nlen = strlen(subs[i].name);
                        if ((size_t)(end - p) >= nlen && *subs[i].value && memcmp(p, subs[i].name, nlen) == 0)
                                break;
                }
                if (i < 2 && out->len + strlen(subs[i].value) <= EXPAND_MAX) {
                        buf_puts(out, subs[i].value);
                        p += nlen;
                } else {
                        buf_append(out, p++, 1);
                }
        }
        buf_terminate(out);
}

/* ------------------------------------------------------------- set-up */

static const char *builddir(void)
{
        const char *d = getenv("RELAY_FUZZ_BUILDDIR");
        return d && *d ? d : FUZZ_BUILDDIR;
}

/* DIR/plugins/NAME.so -> the build tree's copy: product plugins live in
 * plugins/.libs, test plugins in tests/plugins/.libs. */
static void link_plugin(const char *name)
{
        static const char *const where[] = {"plugins/.libs", "tests/plugins/.libs"};
        char from[PATH_MAX], to[PATH_MAX];
        snprintf(to, sizeof(to), "%s/plugins/%s.so", dir, name);
        for (size_t i = 0; i < 2; i++) {
                snprintf(from, sizeof(from), "%s/%s/%s.so", builddir(), where[i], name);
                if (access(from, R_OK) == 0) {
                        if (symlink(from, to) != 0 && errno != EEXIST)
                                die("symlink %s: %s", to, strerror(errno));
                        if (i == 1)
                                snprintf(test_plugins + strlen(test_plugins),
                                         sizeof(test_plugins) - strlen(test_plugins), " %s", name);
                        return;
                }
        }
        die("plugin %s not built in %s (plugins/.libs, tests/plugins/.libs): run make first", name, builddir());
}

static bool loads(const char *list, const char *name)
{
        char word[128];
        for (size_t i = 0; conf_list_item(list, i, word, sizeof(word)); i++)
                if (strcmp(word, name) == 0)
                        return true;
        return false;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) { return remove(path); }

static void cleanup(void)
{
        if (*dir)
                nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The configuration: small limits, so the fuzzer reaches 413 and 431 with
 * small inputs; no rate limits and long-lived tokens, so an input means the
 * same thing for the whole run; synchronous = off, for speed. */
static void write_conf(const char *path, const char *load, bool verbose)
{
        FILE *f = fopen(path, "w");
        if (!f)
                die("%s: %s", path, strerror(errno));
        fprintf(f,
                "[server]\nlisten = 127.0.0.1:0\nworkers = 1\ndata_dir = %s/data\n"
                "[limits]\nmax_body_size = 64k\nmax_header_size = 4k\nmax_headers = 32\nstream_buffer = 64k\n"
                "[storage]\ndir = %s/storage\nsynchronous = off\nbusy_timeout = 100ms\n"
                "[plugins]\ndir = %s/plugins\nload = %s\n"
                "[log]\nlevel = %s\naccess = %s\nfile = %s\n",
                dir, builddir(), dir, load, verbose ? "debug" : "error", verbose ? "true" : "false",
                verbose ? "" : "/dev/null");
        if (loads(load, "users"))
                fprintf(f, "[users]\nrate_limit = 0\nrate_limit.auth = 0\ntoken_ttl = 30d\n");
        if (loads(load, "echo"))
                fprintf(f, "[echo]\nslow_max = 5ms\n");
        if (fclose(f) != 0)
                die("%s: %s", path, strerror(errno));
}

/* A tenant and its admin API key (relayctl tenant create), then a bearer
 * token for that key (POST /v1/auth/token, through the connection code). */
static void bootstrap_credentials(void)
{
        const command *cmd = relay_daemon.commands;
        while (cmd && (strcmp(cmd->group, "tenant") != 0 || strcmp(cmd->name, "create") != 0))
                cmd = cmd->next;
        if (!cmd)
                return; /* no users plugin: the placeholders stay as they are */
        char *text = NULL;
        size_t len = 0;
        FILE *out = open_memstream(&text, &len);
        char name[] = "fuzz", *argv[] = {name, NULL};
        if (!out || cmd->fn(cmd->owner, 1, argv, out) != 0)
                die("tenant create failed");
        fclose(out);
        json_t *doc = json_loads(text, 0, NULL);
        free(text);
        snprintf(api_key, sizeof(api_key), "%s", json_string_value(json_object_get(doc, "api_key")) ?: "");
        json_decref(doc);
        if (!*api_key)
                die("tenant create printed no api_key");

        buf req = {0}, reply = {0};
        char body[512];
        snprintf(body, sizeof(body), "{\"api_key\":\"%s\"}", api_key);
        buf_printf(&req,
                   "POST /v1/auth/token HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n\r\n%s",
                   strlen(body), body);
        const char *chunk = req.data;
        fuzz_exchange(&chunk, &req.len, 1, 0, &reply);
        const char *start = reply.data ? memmem(reply.data, reply.len, "\r\n\r\n", 4) : NULL;
        doc = start ? json_loadb(start + 4, reply.len - (size_t)(start + 4 - reply.data), 0, NULL) : NULL;
        snprintf(token, sizeof(token), "%s", json_string_value(json_object_get(doc, "token")) ?: "");
        json_decref(doc);
        if (fuzz_status(&reply) != 200 || !*token)
                die("POST /v1/auth/token did not give a token: %.*s", (int)reply.len, reply.data ? reply.data : "");
        buf_free(&req);
        buf_free(&reply);
}

void fuzz_setup(void)
{
        signal(SIGPIPE, SIG_IGN); /* as relay-server: a write to a closed peer is an error, not a signal */
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/relay-fuzz.XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
                *dir = '\0';
                die("mkdtemp: %s", strerror(errno));
        }
        atexit(cleanup);
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/plugins", dir);
        mkdir(path, 0700);
        snprintf(path, sizeof(path), "%s/data", dir);
        mkdir(path, 0700);
        const char *load = getenv("RELAY_FUZZ_PLUGINS");
        if (!load || !*load)
                load = FUZZ_PLUGINS;
        char word[128];
        for (size_t i = 0; conf_list_item(load, i, word, sizeof(word)); i++)
                link_plugin(word);
        const char *verbose = getenv("RELAY_FUZZ_LOG");
        snprintf(path, sizeof(path), "%s/relay.conf", dir);
        write_conf(path, load, verbose && *verbose == '1');

        char err[2048];
        if (daemon_setup(path, NULL, 0, SETUP_RUN, err, sizeof(err)) != 0 ||
            daemon_start_plugins(err, sizeof(err)) != 0)
                die("%s", err);

        /* One worker, its loop run by the fuzz targets on this thread. */
        if (!(w = calloc(1, sizeof(*w))) || !(relay_daemon.workers = calloc(1, sizeof(worker *))))
                die("out of memory");
        relay_random(&w->id_prefix, sizeof(w->id_prefix));
        if (uv_loop_init(&w->loop) != 0 || metrics_init(&w->metrics, router_count(relay_daemon.router)) != 0)
                die("cannot set up the worker");
        relay_daemon.workers[0] = w;
        relay_daemon.n_workers = 1;
        bootstrap_credentials();
}
