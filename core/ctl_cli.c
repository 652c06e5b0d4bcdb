/* ctl_cli.c - relayctl, the administration command.  It reads the same
 * configuration as relay-server (-c, -o before the subcommand), loads the
 * same plugins and works on the storage they name.  Each subcommand is a
 * row in `commands`; later parts of Relay add theirs there. */
#include "config.h"
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "log.h"
#include "migrate.h"
#include "storage.h"

typedef int (*command_fn)(int argc, char **argv);

static int db_status(int argc, char **argv)
{
        char err[1024];
        int pending = migrate_status(storage_control_db(), stdout, err, sizeof(err));
        if (pending < 0) {
                fprintf(stderr, "relayctl: %s\n", err);
                return 1;
        }
        printf("%d migration%s pending (storage: %s)\n", pending, pending == 1 ? "" : "s",
               relay_db_dialect(storage_control_db()));
        return 0;
}

static int db_migrate(int argc, char **argv)
{
        char err[1024];
        if (migrate_apply(storage_control_db(), err, sizeof(err)) != 0) {
                fprintf(stderr, "relayctl: %s\n", err);
                return 1;
        }
        printf("migrations applied\n");
        return db_status(argc, argv);
}

static const struct {
        const char *group, *name, *usage;
        command_fn fn;
} commands[] = {
        {"db", "status", "list applied and pending migrations per plugin", db_status},
        {"db", "migrate", "apply pending migrations", db_migrate},
};

static void usage(FILE *out)
{
        fprintf(out, "Usage: relayctl [-c FILE] [-o SECTION.KEY=VALUE]... COMMAND [ARGS]\n\nCommands:\n");
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                fprintf(out, "  %s %-14s %s\n", commands[i].group, commands[i].name, commands[i].usage);
        for (command *c = relay_daemon.commands; c; c = c->next)
                fprintf(out, "  %s %-14s %s (%s)\n", c->group, c->name, c->usage, c->owner->name);
        fprintf(out, "\nThe configuration is relay-server's (default %s); plugins it loads add commands.\n",
                RELAY_CONF_FILE);
}

/* Runs GROUP NAME from the core's table or a plugin's registration;
 * -1 when there is no such command. */
static int run_command(const char *group, const char *name, int argc, char **argv)
{
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(commands[i].group, group) == 0 && strcmp(commands[i].name, name) == 0)
                        return commands[i].fn(argc, argv);
        for (command *c = relay_daemon.commands; c; c = c->next)
                if (strcmp(c->group, group) == 0 && strcmp(c->name, name) == 0) {
                        /* A fresh install is bootstrapped with relayctl before the
                         * daemon ever ran: the schema must be there first. */
                        char err[1024];
                        if (migrate_apply(storage_control_db(), err, sizeof(err)) != 0) {
                                fprintf(stderr, "relayctl: %s\n", err);
                                return 1;
                        }
                        int rc = c->fn(c->owner, argc, argv, stdout);
                        fflush(stdout);
                        return rc;
                }
        return -1;
}

RELAY_API int relay__ctl_main(int argc, char **argv);
RELAY_API int relay__ctl_main(int argc, char **argv)
{
        static const struct option longopts[] = {
                {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
        const char *config = RELAY_CONF_FILE;
        char **overrides = calloc((size_t)argc + 1, sizeof(char *));
        size_t n_overrides = 0;
        bool help = false;
        int opt;
        /* '+': options stop at the subcommand, which may have its own. */
        while ((opt = getopt_long(argc, argv, "+c:o:h", longopts, NULL)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'o': overrides[n_overrides++] = optarg; break;
                case 'h': help = true; break;
                default:
                        usage(stderr);
                        free(overrides);
                        return 2;
                }
        }
        log_configure(NULL, RELAY_LOG_WARN, LOG_FORMAT_TEXT, NULL, 0); /* quiet: the command prints its result */
        char err[2048];
        int rc = daemon_setup(config, overrides, n_overrides, SETUP_ADMIN, err, sizeof(err));
        if (rc != 0) {
                fprintf(stderr, "relayctl: %s\n", err);
        } else if (help || argc - optind < 2) {
                usage(help ? stdout : stderr);
                rc = help ? 0 : 2;
        } else {
                const char *group = argv[optind], *name = argv[optind + 1];
                rc = run_command(group, name, argc - optind - 2, argv + optind + 2);
                if (rc < 0) {
                        fprintf(stderr, "relayctl: unknown command '%s %s'\n", group, name);
                        usage(stderr);
                        rc = 2;
                }
        }
        daemon_teardown();
        free(overrides);
        return rc;
}
