/* plugin_loader.c - plugins through libltdl.
 *
 * The descriptor is read and checked (magic, size, ABI) before any plugin
 * function runs, and every refusal is one line naming the plugin, its file
 * and both versions.  Plugins are opened with lt_dlopenadvise(ext, local):
 * the .so is found with or without its .la (distributions delete .la files)
 * and its symbols stay private to it. */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include "log.h"
#include "module.h"
#include "plugin_loader.h"
#include "settings.h"

const char *plugin_api_route_error(void);
void plugin_api_clear_error(void);
int plugin_api_declare_common(relay_plugin *p, conf_check_fn check_mount);

static bool valid_name(const char *name)
{
        if (!*name || strlen(name) > 64)
                return false;
        for (const char *c = name; *c; c++)
                if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_' || *c == '-'))
                        return false;
        return true;
}

/* dlopen fails before we can read the descriptor when the plugin links
 * another major of librelay; say what that means. */
static void explain_open_error(const char *name, const char *path, const char *dlerr, char *err, size_t err_len)
{
        const char *so = dlerr ? strstr(dlerr, "librelay.so.") : NULL;
        if (so)
                snprintf(err, err_len,
                         "plugin '%s' (%s) was built for Relay SDK ABI %d.x (it needs librelay.so.%d); this "
                         "relay-server provides ABI %d.%d: rebuild the plugin against this SDK",
                         name, path, atoi(so + 12), atoi(so + 12), RELAY_SDK_ABI_MAJOR, RELAY_SDK_ABI_MINOR);
        else
                snprintf(err, err_len, "plugin '%s': cannot load %s: %s", name, path, dlerr ? dlerr : "unknown error");
}

/* The checks a descriptor must pass before any of the plugin's code runs. */
static int check_descriptor(const relay_plugin_desc *d, const char *name, const char *path, char *err, size_t err_len)
{
        if (!d) {
                snprintf(err, err_len,
                         "plugin '%s' (%s) is not a Relay plugin: no relay_plugin_descriptor symbol (use "
                         "RELAY_PLUGIN())",
                         name, path);
                return -1;
        }
        if (d->magic != RELAY_PLUGIN_MAGIC) {
                snprintf(err, err_len, "plugin '%s' (%s) has a corrupt descriptor (bad magic 0x%08x)", name, path,
                         d->magic);
                return -1;
        }
        if (d->abi_major != RELAY_SDK_ABI_MAJOR || d->abi_minor > RELAY_SDK_ABI_MINOR) {
                snprintf(err, err_len,
                         "plugin '%s' (%s) was built for Relay SDK ABI %u.%u; this relay-server provides ABI %d.%d: %s",
                         name, path, d->abi_major, d->abi_minor, RELAY_SDK_ABI_MAJOR, RELAY_SDK_ABI_MINOR,
                         d->abi_major != RELAY_SDK_ABI_MAJOR
                                 ? "rebuild the plugin against this SDK"
                                 : "upgrade relay-server or rebuild the plugin against this SDK");
                return -1;
        }
        if (d->size < offsetof(relay_plugin_desc, reserved)) {
                snprintf(err, err_len, "plugin '%s' (%s) has a descriptor of %u bytes, too small for ABI %u.%u", name,
                         path, d->size, d->abi_major, d->abi_minor);
                return -1;
        }
        if (!d->name || strcmp(d->name, name) != 0) {
                snprintf(err, err_len, "file %s holds plugin '%s', not '%s'", path, d->name ? d->name : "(unnamed)",
                         name);
                return -1;
        }
        return 0;
}

static relay_plugin *open_plugin(const char *dir, const char *name, char *err, size_t err_len)
{
        if (!valid_name(name)) {
                snprintf(err, err_len, "bad plugin name '%s' (letters, digits, '-' and '_')", name);
                return NULL;
        }
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        lt_dlhandle h = module_open(dir, name);
        if (!h) {
                const char *e = lt_dlerror();
                if (e && strstr(e, "not found"))
                        snprintf(err, err_len, "plugin '%s' not found: no %s.so in %s", name, name, dir);
                else
                        explain_open_error(name, path, e, err, err_len);
                return NULL;
        }
        const lt_dlinfo *info = lt_dlgetinfo(h);
        const char *file = info && info->filename ? info->filename : path;
        const relay_plugin_desc *d = lt_dlsym(h, "relay_plugin_descriptor");
        if (check_descriptor(d, name, file, err, err_len) != 0) {
                lt_dlclose(h);
                return NULL;
        }
        relay_plugin *p = calloc(1, sizeof(*p));
        if (!p || !(p->name = strdup(name)) || !(p->path = strdup(file))) {
                if (p)
                        free(p->name);
                free(p);
                lt_dlclose(h);
                snprintf(err, err_len, "out of memory");
                return NULL;
        }
        p->handle = h;
        p->desc = d;
        p->error_style = RELAY_ERRORS_OBJECT;
        return p;
}

static relay_plugin *find_loaded(relay_plugin **list, size_t n, const char *name)
{
        for (size_t i = 0; i < n; i++)
                if (strcmp(list[i]->name, name) == 0)
                        return list[i];
        return NULL;
}

/* Depth-first topological order; a cycle or a missing requirement fails. */
static int visit(relay_plugin *p, relay_plugin **all, size_t n, relay_plugin **out, size_t *n_out, int *mark, char *err,
                 size_t err_len)
{
        size_t idx = 0;
        while (all[idx] != p)
                idx++;
        if (mark[idx] == 2)
                return 0;
        if (mark[idx] == 1) {
                snprintf(err, err_len, "plugin '%s' is part of a requirement cycle", p->name);
                return -1;
        }
        mark[idx] = 1;
        for (const char *const *r = p->desc->requires; r && *r; r++) {
                relay_plugin *dep = find_loaded(all, n, *r);
                if (!dep) {
                        snprintf(err, err_len,
                                 "plugin '%s' requires plugin '%s', which is not loaded: add it to [plugins] load",
                                 p->name, *r);
                        return -1;
                }
                if (visit(dep, all, n, out, n_out, mark, err, err_len) != 0)
                        return -1;
        }
        mark[idx] = 2;
        out[(*n_out)++] = p;
        return 0;
}

int plugins_load(const char *dir, char **names, size_t n, char *err, size_t err_len)
{
        relay_plugin **all = calloc(n + 1, sizeof(*all));
        relay_plugin **ordered = calloc(n + 1, sizeof(*ordered));
        int *mark = calloc(n + 1, sizeof(int));
        size_t loaded = 0, n_ordered = 0;
        int rc = -1;
        if (!all || !ordered || !mark) {
                snprintf(err, err_len, "out of memory");
                goto out;
        }
        for (size_t i = 0; i < n; i++) {
                if (find_loaded(all, loaded, names[i]))
                        continue; /* listed twice: once is enough */
                if (!(all[loaded] = open_plugin(dir, names[i], err, err_len)))
                        goto out;
                loaded++;
        }
        for (size_t i = 0; i < loaded; i++)
                if (visit(all[i], all, loaded, ordered, &n_ordered, mark, err, err_len) != 0)
                        goto out;
        relay_daemon.plugins = ordered;
        relay_daemon.n_plugins = n_ordered;
        ordered = NULL;
        rc = 0;
out:
        if (rc != 0)
                for (size_t i = 0; i < loaded; i++) {
                        lt_dlclose(all[i]->handle);
                        free(all[i]->name), free(all[i]->path), free(all[i]);
                }
        free(all);
        free(ordered);
        free(mark);
        return rc;
}

static const char *check_mount(const char *v)
{
        if (!*v)
                return NULL;
        if (v[0] != '/' || v[strlen(v) - 1] == '/' || strstr(v, "//") || strpbrk(v, " ?#"))
                return "expected a path such as /relaysync (no trailing slash)";
        return NULL;
}

int plugins_init(char *err, size_t err_len)
{
        conf *c = conf_current();
        for (size_t i = 0; i < relay_daemon.n_plugins; i++) {
                relay_plugin *p = relay_daemon.plugins[i];
                if (plugin_api_declare_common(p, check_mount) != 0) {
                        snprintf(err, err_len, "plugin '%s': cannot declare its configuration keys", p->name);
                        return -1;
                }
                const char *mount = conf_get(c, p->name, "mount");
                p->mount = strdup(mount && !check_mount(mount) ? mount : "");
                p->error_style = RELAY_ERRORS_OBJECT;
                if (!p->desc->init)
                        continue;
                relay_daemon.initialising = p;
                plugin_api_clear_error();
                int rc = p->desc->init(p);
                relay_daemon.initialising = NULL;
                if (rc != 0) {
                        const char *why = plugin_api_route_error();
                        if (*why)
                                snprintf(err, err_len, "%s", why);
                        else
                                snprintf(err, err_len, "plugin '%s' (%s) failed to initialise (init returned %d)",
                                         p->name, p->path, rc);
                        return -1;
                }
                p->inited = true;
        }
        return 0;
}

int plugins_start(char *err, size_t err_len)
{
        for (size_t i = 0; i < relay_daemon.n_plugins; i++) {
                relay_plugin *p = relay_daemon.plugins[i];
                if (p->desc->start && p->desc->start(p) != 0) {
                        snprintf(err, err_len, "plugin '%s' (%s) failed to start", p->name, p->path);
                        return -1;
                }
                p->started = true;
        }
        return 0;
}

void plugins_reload(void)
{
        for (size_t i = 0; i < relay_daemon.n_plugins; i++) {
                relay_plugin *p = relay_daemon.plugins[i];
                if (p->desc->reload && p->desc->reload(p) != 0)
                        log_write(RELAY_LOG_WARN, p->name, NULL,
                                  "reload failed; the plugin keeps its previous settings");
        }
}

void plugins_stop(void)
{
        for (size_t i = relay_daemon.n_plugins; i-- > 0;) {
                relay_plugin *p = relay_daemon.plugins[i];
                if (p->started && p->desc->stop)
                        p->desc->stop(p);
                p->started = false;
        }
}

/* Plugins are closed last, in reverse order, after every user is gone. */
void plugins_unload(void)
{
        for (size_t i = relay_daemon.n_plugins; i-- > 0;) {
                relay_plugin *p = relay_daemon.plugins[i];
                lt_dlclose(p->handle);
                free(p->name), free(p->path), free(p->mount), free(p);
        }
        free(relay_daemon.plugins);
        relay_daemon.plugins = NULL;
        relay_daemon.n_plugins = 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Module names in DIR: every "*.so" and "*.la", once each, sorted. */
static size_t module_names(const char *dir, char ***out)
{
        DIR *d = opendir(dir);
        size_t n = 0, cap = 0;
        char **names = NULL;
        struct dirent *e;
        while (d && (e = readdir(d))) {
                const char *dot = strrchr(e->d_name, '.');
                if (!dot || (strcmp(dot, ".so") && strcmp(dot, ".la")) || e->d_name[0] == '.')
                        continue;
                char *name = strndup(e->d_name, (size_t)(dot - e->d_name));
                bool dup = false;
                for (size_t i = 0; i < n && !dup; i++)
                        dup = strcmp(names[i], name) == 0;
                if (dup || !name) {
                        free(name);
                        continue;
                }
                if (n == cap) {
                        cap = cap ? cap * 2 : 16;
                        char **grown = realloc(names, cap * sizeof(char *));
                        if (!grown) {
                                free(name);
                                break;
                        }
                        names = grown;
                }
                names[n++] = name;
        }
        if (d)
                closedir(d);
        if (n)
                qsort(names, n, sizeof(char *), cmp_str);
        *out = names;
        return n;
}

int plugins_list(const char *dir, FILE *out)
{
        char **names;
        size_t n = module_names(dir, &names);
        int bad = 0;
        for (size_t i = 0; i < n; i++) {
                char err[1024];
                relay_plugin *p = open_plugin(dir, names[i], err, sizeof(err));
                if (p) {
                        fprintf(out, "%-16s %-10s ABI %u.%u  %s\n", p->name, p->desc->version ? p->desc->version : "-",
                                p->desc->abi_major, p->desc->abi_minor, p->path);
                        lt_dlclose(p->handle);
                        free(p->name), free(p->path), free(p);
                } else {
                        fprintf(out, "%-16s unusable: %s\n", names[i], err);
                        bad++;
                }
                free(names[i]);
        }
        free(names);
        if (!n)
                fprintf(out, "no plugins in %s\n", dir);
        return bad ? 1 : 0;
}
