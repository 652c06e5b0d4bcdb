/* plugin_loader.h - finding, checking, ordering and running plugins. */
#ifndef RELAY_PLUGIN_LOADER_H
#define RELAY_PLUGIN_LOADER_H

#include <stdio.h>
#include "daemon.h"

/* Opens each plugin of [plugins] load, checks its descriptor and orders
 * them so every plugin comes after those it requires. */
int plugins_load(const char *dir, char **names, size_t n, char *err, size_t err_len);
/* Declares each plugin's `mount` key and runs its init(). */
int plugins_init(char *err, size_t err_len);
int plugins_start(char *err, size_t err_len);
void plugins_reload(void);
void plugins_stop(void);
void plugins_unload(void);
/* --list-plugins: every plugin file in DIR, one line each. */
int plugins_list(const char *dir, FILE *out);

#endif
