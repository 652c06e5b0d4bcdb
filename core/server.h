/* server.h - the running daemon: listeners, workers, signals, reload and
 * graceful shutdown, all driven from the control thread. */
#ifndef RELAY_SERVER_H
#define RELAY_SERVER_H

#include <stddef.h>

typedef struct server_options {
        const char *config_file;
        char **overrides;
        size_t n_overrides;
} server_options;

/* Serves until SIGTERM/SIGINT.  Returns the process exit code. */
int server_run(const server_options *opts);
/* A worker's loop has ended (called on that worker's thread). */
void server_worker_exited(void);

#endif
