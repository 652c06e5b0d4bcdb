/* server.c - binds, starts the workers, and answers signals:
 *   SIGTERM, SIGINT  stop accepting, finish requests in flight (up to
 *                    [server] shutdown_timeout), stop plugins, exit 0
 *   SIGHUP           reread the configuration and reopen the log file */
#include "config.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "daemon.h"
#include "http_client.h"
#include "events_internal.h"
#include "idempotency_internal.h"
#include "log.h"
#include "ratelimit.h"
#include "net_addr.h"
#include "plugin_loader.h"
#include "server.h"
#include "settings.h"
#include "worker.h"

static const server_options *options;
static uv_signal_t sig_term, sig_int, sig_hup;
static uv_timer_t drain_deadline;
static uv_async_t worker_exit;
static bool stopping;

/* ------------------------------------------------------------- listening */

/* Worker 0's sockets bind the configured addresses (port 0 picks one);
 * the other workers bind the same resolved address with SO_REUSEPORT. */
static int bind_all(settings *s, int n_workers, int **fds_out, char *err, size_t err_len)
{
        size_t n = s->n_listen;
        int *fds = calloc((size_t)n_workers * n, sizeof(int));
        if (!fds) {
                snprintf(err, err_len, "out of memory");
                return -1;
        }
        for (size_t a = 0; a < n; a++) {
                struct sockaddr_storage ss;
                net_addr_parse(s->listen[a], &ss);
                /* SO_REUSEPORT would let us join another process already
                 * listening there: probe without it first, so a second
                 * daemon on the same port fails instead of sharing it. */
                int probe = net_bind_socket(&ss, 0, err, err_len);
                if (probe < 0) {
                        for (size_t i = 0; i < a; i++)
                                for (int w = 0; w < n_workers; w++)
                                        close(fds[(size_t)w * n + i]);
                        free(fds);
                        return -1;
                }
                socklen_t plen = sizeof(ss);
                getsockname(probe, (struct sockaddr *)&ss, &plen); /* port 0: keep the one chosen */
                close(probe);
                for (int w = 0; w < n_workers; w++) {
                        int fd = net_bind_socket(&ss, n_workers > 1, err, err_len);
                        if (fd < 0) {
                                for (size_t i = 0; i < a; i++)
                                        for (int v = 0; v < n_workers; v++)
                                                close(fds[(size_t)v * n + i]);
                                for (int v = 0; v < w; v++)
                                        close(fds[(size_t)v * n + a]);
                                free(fds);
                                return -1;
                        }
                        fds[(size_t)w * n + a] = fd;
                        if (w == 0) {
                                socklen_t len = sizeof(ss);
                                getsockname(fd, (struct sockaddr *)&ss, &len);
                                char where[80];
                                net_addr_format((struct sockaddr *)&ss, where, sizeof(where));
                                log_info("listening on %s", where);
                        }
                }
        }
        *fds_out = fds;
        return 0;
}

static int worker_count(settings *s)
{
        if (s->workers > 0)
                return s->workers;
        uv_cpu_info_t *cpus;
        int n = 1;
        if (uv_cpu_info(&cpus, &n) == 0)
                uv_free_cpu_info(cpus, n);
        return n > 0 ? n : 1;
}

static int start_workers(settings *s, char *err, size_t err_len)
{
        int n = worker_count(s);
        int *fds;
        if (bind_all(s, n, &fds, err, err_len) != 0)
                return -1;
        relay_daemon.workers = calloc((size_t)n, sizeof(worker *));
        if (!relay_daemon.workers) {
                snprintf(err, err_len, "out of memory");
                free(fds);
                return -1;
        }
        for (int i = 0; i < n; i++) {
                worker *w = calloc(1, sizeof(*w));
                if (!w) {
                        snprintf(err, err_len, "out of memory");
                        free(fds);
                        return -1;
                }
                relay_daemon.workers[i] = w;
                relay_daemon.n_workers = (size_t)i + 1;
                if (worker_start(w, i, fds + (size_t)i * s->n_listen, s->n_listen, err, err_len) != 0) {
                        free(fds);
                        return -1;
                }
        }
        free(fds);
        log_info("%d worker%s, %zu plugin%s", n, n == 1 ? "" : "s", relay_daemon.n_plugins,
                 relay_daemon.n_plugins == 1 ? "" : "s");
        return 0;
}

/* ------------------------------------------------------------ shutdown */

static void close_walk(uv_handle_t *h, void *arg)
{
        if (!uv_is_closing(h))
                uv_close(h, NULL);
}

static size_t workers_exited; /* atomic */

/* A worker thread has returned from its loop: when the last one has, stop
 * the plugins and let the control loop end. */
static void on_worker_exit(uv_async_t *a)
{
        if (__atomic_load_n(&workers_exited, __ATOMIC_ACQUIRE) < relay_daemon.n_workers)
                return;
        for (size_t i = 0; i < relay_daemon.n_workers; i++)
                worker_join(relay_daemon.workers[i]);
        events_stop();
        idem_stop();
        http_client_stop(); /* webhook jobs waiting on an answer finish before the queue stops */
        jobs_stop();
        plugins_stop();
        uv_walk(relay_daemon.loop, close_walk, NULL);
}

#define FORCE_GRACE_MS 1000

/* Connections are closed; what still runs is plugin work in the thread
 * pool, which cannot be interrupted.  The deadline is the operator's
 * promise: exit without it. */
static void on_force_grace(uv_timer_t *t)
{
        size_t exited = __atomic_load_n(&workers_exited, __ATOMIC_ACQUIRE);
        if (exited >= relay_daemon.n_workers)
                return;
        log_error("%zu worker%s still busy %dms after the shutdown deadline (plugin work in progress): exiting now",
                  relay_daemon.n_workers - exited, relay_daemon.n_workers - exited == 1 ? "" : "s", FORCE_GRACE_MS);
        _exit(0);
}

static void on_deadline(uv_timer_t *t)
{
        log_warn("shutdown deadline passed: closing the remaining connections");
        for (size_t i = 0; i < relay_daemon.n_workers; i++)
                worker_wake(relay_daemon.workers[i], WAKE_FORCE);
        uv_timer_start(&drain_deadline, on_force_grace, FORCE_GRACE_MS, 0);
}

static void begin_shutdown(int signum)
{
        if (stopping)
                return;
        stopping = true;
        settings *s = settings_current();
        log_info("%s: finishing requests in flight (up to %llums), then stopping", strsignal(signum),
                 (unsigned long long)s->shutdown_timeout_ms);
        for (size_t i = 0; i < relay_daemon.n_workers; i++)
                worker_wake(relay_daemon.workers[i], WAKE_DRAIN);
        uv_timer_start(&drain_deadline, on_deadline, s->shutdown_timeout_ms, 0);
        uv_unref((uv_handle_t *)&drain_deadline);
}

/* -------------------------------------------------------------- reload */

static bool same_list(char **a, size_t na, char **b, size_t nb)
{
        if (na != nb)
                return false;
        for (size_t i = 0; i < na; i++)
                if (strcmp(a[i], b[i]) != 0)
                        return false;
        return true;
}

static void reload(void)
{
        char err[1024];
        settings *old = settings_current();
        conf *c = conf_load(options->config_file, options->overrides, options->n_overrides, err, sizeof(err));
        if (!c || conf_copy_keys(c, old->cfg) != 0 || conf_validate(c, false, err, sizeof(err)) != 0) {
                log_error("reload refused, the running configuration stays: %s", err);
                conf_free(c);
                return;
        }
        settings *s = settings_from_conf(c, err, sizeof(err));
        if (!s) {
                log_error("reload refused: %s", err);
                conf_free(c);
                return;
        }
        if (log_configure(s->log_file, s->log_level, s->log_fmt, err, sizeof(err)) != 0)
                log_error("reload: %s (logging where it did)", err);
        if (!same_list(s->listen, s->n_listen, old->listen, old->n_listen) || s->workers != old->workers ||
            !same_list(s->load, s->n_load, old->load, old->n_load) || strcmp(s->plugin_dir, old->plugin_dir) != 0)
                log_warn("listen addresses, workers and the plugin list change only on restart");
        ratelimit_compile(s);
        settings_publish(s);
        plugins_reload();
        log_info("configuration reloaded");
}

static void on_signal(uv_signal_t *h, int signum)
{
        if (signum == SIGHUP)
                reload();
        else
                begin_shutdown(signum);
}

/* Called by worker threads when their loop ends. */
void server_worker_exited(void)
{
        __atomic_add_fetch(&workers_exited, 1, __ATOMIC_ACQ_REL);
        uv_async_send(&worker_exit);
}

int server_run(const server_options *opts)
{
        char err[1024];
        options = opts;
        signal(SIGPIPE, SIG_IGN);
        uv_loop_t *loop = relay_daemon.loop;
        uv_async_init(loop, &worker_exit, on_worker_exit);
        uv_timer_init(loop, &drain_deadline);
        uv_signal_init(loop, &sig_term);
        uv_signal_init(loop, &sig_int);
        uv_signal_init(loop, &sig_hup);
        uv_signal_start(&sig_term, on_signal, SIGTERM);
        uv_signal_start(&sig_int, on_signal, SIGINT);
        uv_signal_start(&sig_hup, on_signal, SIGHUP);
        if (start_workers(settings_current(), err, sizeof(err)) != 0) {
                fprintf(stderr, "relay-server: %s\n", err);
                if (!relay_daemon.n_workers) {
                        uv_walk(loop, close_walk, NULL);
                        uv_run(loop, UV_RUN_DEFAULT);
                        return 4;
                }
                begin_shutdown(SIGTERM); /* some workers run: stop them in order */
                uv_run(loop, UV_RUN_DEFAULT);
                return 4;
        }
        log_info("relay-server %s ready", PACKAGE_VERSION);
        uv_run(loop, UV_RUN_DEFAULT);
        log_info("stopped");
        return 0;
}
