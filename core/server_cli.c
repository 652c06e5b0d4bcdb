/* server_cli.c - relay-server's command line.  It lives in librelay, so
 * the executable and the plugins share one copy of the daemon's state. */
#include "config.h"
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "daemon.h"
#include "plugin_loader.h"
#include "server.h"
#include "relay/version.h"

static void usage(FILE *out)
{
        fprintf(out,
                "Usage: relay-server [-c FILE] [-o SECTION.KEY=VALUE]... [-t | --list-plugins]\n"
                "\n"
                "  -c, --config FILE     configuration file (default %s)\n"
                "  -o SECTION.KEY=VALUE  override a configuration key (repeatable; KEY+=VALUE appends)\n"
                "  -t, --test            check the configuration and every plugin, then exit 0 or 1\n"
                "      --list-plugins    list the plugins in the plugin folder with their ABI\n"
                "  -V, --version         print the version and the SDK ABI\n"
                "  -h, --help            this help\n"
                "\n"
                "Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the configuration.\n",
                RELAY_CONF_FILE);
}

/* Private entry point: exported for relay-server's main() only, not part
 * of the SDK (two underscores). */
RELAY_API int relay__server_main(int argc, char **argv);
RELAY_API int relay__server_main(int argc, char **argv)
{
        static const struct option longopts[] = {
                {"config", required_argument, NULL, 'c'}, {"test", no_argument, NULL, 't'},
                {"version", no_argument, NULL, 'V'},      {"help", no_argument, NULL, 'h'},
                {"list-plugins", no_argument, NULL, 'L'}, {NULL, 0, NULL, 0}};
        const char *config = RELAY_CONF_FILE;
        char **overrides = calloc((size_t)argc, sizeof(char *));
        size_t n_overrides = 0;
        bool check = false, list = false;
        int opt;
        while ((opt = getopt_long(argc, argv, "c:o:tVh", longopts, NULL)) != -1) {
                switch (opt) {
                case 'c': config = optarg; break;
                case 'o': overrides[n_overrides++] = optarg; break;
                case 't': check = true; break;
                case 'L': list = true; break;
                case 'V':
                        printf("relay-server %s (Relay SDK ABI %d.%d)\n", PACKAGE_VERSION, RELAY_SDK_ABI_MAJOR,
                               RELAY_SDK_ABI_MINOR);
                        free(overrides);
                        return 0;
                case 'h':
                        usage(stdout);
                        free(overrides);
                        return 0;
                default:
                        usage(stderr);
                        free(overrides);
                        return 1;
                }
        }
        if (optind < argc) {
                fprintf(stderr, "relay-server: unexpected argument '%s'\n", argv[optind]);
                free(overrides);
                return 1;
        }
        if (list) {
                char *dir = daemon_plugin_dir(config, overrides, n_overrides);
                lt_dlinit();
                int rc = plugins_list(dir, stdout);
                lt_dlexit();
                free(dir);
                free(overrides);
                return rc;
        }
        char err[2048] = "";
        int rc = daemon_setup(config, overrides, n_overrides, check ? SETUP_CHECK : SETUP_RUN, err, sizeof(err));
        if (rc == 0 && check) {
                printf("relay-server: configuration %s is valid; %zu plugin%s ready\n", config, relay_daemon.n_plugins,
                       relay_daemon.n_plugins == 1 ? "" : "s");
        } else if (rc == 0) {
                rc = daemon_start_plugins(err, sizeof(err));
                if (rc == 0) {
                        server_options opts = {config, overrides, n_overrides};
                        rc = server_run(&opts);
                } else {
                        fprintf(stderr, "relay-server: %s\n", err);
                }
        } else {
                fprintf(stderr, "relay-server: %s\n", err);
                if (check)
                        rc = 1;
        }
        daemon_teardown();
        free(overrides);
        return rc;
}
