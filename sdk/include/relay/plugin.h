/* relay/plugin.h - what a plugin is and what it registers.
 *
 * A plugin is a shared object that exports one descriptor, written with the
 * RELAY_PLUGIN() macro.  The daemon reads the descriptor before running any
 * plugin code, checks its ABI, then calls, in dependency order:
 *
 *   init(p)    register routes, configuration keys, services, hooks.  No
 *              side effects beyond registration: `relay-server -t` runs it.
 *   start(p)   acquire resources (timers, listeners, threads).
 *   reload(p)  after SIGHUP, with the new configuration in place.
 *   stop(p)    release them, in reverse order, at shutdown.
 *
 * Handlers run on the worker thread that owns the connection, to completion:
 * plugin code is plain synchronous C.  Slow work goes to relay_work(). */
#ifndef RELAY_PLUGIN_H
#define RELAY_PLUGIN_H

#include <stdio.h>
#include <relay/common.h>
#include <relay/version.h>
#include <relay/log.h>
#include <relay/conf.h>
#include <relay/request.h>
#include <relay/sse.h>
#include <relay/stream.h>
#include <relay/util.h>
#include <relay/db.h>
#include <relay/events.h>
#include <relay/jobs.h>
#include <relay/idempotency.h>
#include <relay/http_client.h>

RELAY_BEGIN_DECLS

/* ---------------------------------------------------------------- descriptor */

#define RELAY_PLUGIN_MAGIC 0x52454c59u /* "RELY" */

typedef struct relay_plugin_desc {
        /* Checked before any plugin code runs; filled in by RELAY_PLUGIN(). */
        uint32_t magic;
        uint16_t abi_major;
        uint16_t abi_minor;
        uint32_t size; /* sizeof(relay_plugin_desc) when built */

        const char *name;            /* as in configuration: "records" */
        const char *version;         /* the plugin's own version: "1.0.0" */
        const char *description;     /* one line, for --list-plugins */
        const char *const *requires; /* RELAY_REQUIRES("users", ...) or NULL */

        int (*init)(relay_plugin *p);
        int (*start)(relay_plugin *p);
        int (*reload)(relay_plugin *p);
        void (*stop)(relay_plugin *p);

        void *reserved[8]; /* for later minors; leave zero */
} relay_plugin_desc;

#define RELAY_REQUIRES(...) ((const char *const[]){__VA_ARGS__, NULL})

/* RELAY_PLUGIN(records, .version = "1.0.0", .init = init);
 *
 * `id` is the plugin's file name as a C identifier (training-jobs.so ->
 * training_jobs); .name defaults to it.  The descriptor is exported as
 * <id>_LTX_relay_plugin_descriptor, the name libltdl looks up first, so plugins can
 * also be dlpreopened into a static daemon; a plain `relay_plugin_descriptor` alias is
 * exported for loaders that do not know the module name. */
#define RELAY_PLUGIN(id, ...)                                                                                    \
        RELAY_API const relay_plugin_desc id##_LTX_relay_plugin_descriptor = {.magic = RELAY_PLUGIN_MAGIC,       \
                                                                              .abi_major = RELAY_SDK_ABI_MAJOR,  \
                                                                              .abi_minor = RELAY_SDK_ABI_MINOR,  \
                                                                              .size = sizeof(relay_plugin_desc), \
                                                                              .name = #id,                       \
                                                                              __VA_ARGS__};                      \
        RELAY_PLUGIN_ALIAS_(id)

#ifndef RELAY_PLUGIN_STATIC
#define RELAY_PLUGIN_ALIAS_(id)                                          \
        extern RELAY_API const relay_plugin_desc relay_plugin_descriptor \
                __attribute__((alias(#id "_LTX_relay_plugin_descriptor")));
#else
#define RELAY_PLUGIN_ALIAS_(id)
#endif

/* ------------------------------------------------------------ plugin handle */

RELAY_API const char *relay_plugin_name(relay_plugin *p);
RELAY_API void relay_plugin_set_data(relay_plugin *p, void *data);
RELAY_API void *relay_plugin_data(relay_plugin *p);
/* The ABI of the running daemon, to test for a newer minor at run time. */
RELAY_API void relay_abi(unsigned *major, unsigned *minor);

/* ------------------------------------------------------------------- routes */

/* Error shapes of the five products.  A plugin declares its style once; the
 * SDK's error helpers (request.h) then answer in it. */
typedef enum {
        RELAY_ERRORS_OBJECT = 0, /* {"error":{"code":"...","message":"..."}} */
        RELAY_ERRORS_STRING = 1, /* {"error":"message"} (SYN Link) */
        RELAY_ERRORS_DETAIL = 2  /* {"detail":"message"} or 422 {"detail":[{loc,msg,type}]} (Relay AI) */
} relay_error_style_t;

RELAY_API void relay_error_style(relay_plugin *p, relay_error_style_t style);

/* What a route requires of its caller.  Authenticators (below) establish the
 * principal; a route that requires one answers 401 without it and 403 when
 * the principal lacks the role or scope. */
typedef enum {
        RELAY_AUTH_PUBLIC = 0,    /* anyone */
        RELAY_AUTH_PRINCIPAL = 1, /* any authenticated principal */
        RELAY_AUTH_TENANT = 2     /* a principal that belongs to a tenant */
} relay_auth;

typedef int (*relay_handler)(relay_req *req);

/* Register METHOD PATTERN.  PATTERN is absolute ("/v1/records/:id"): a
 * segment starting with ':' captures a parameter; everything else matches
 * literally, ':' inside a segment included ("/v1/relays/sessions:authorize-user").
 * The plugin's configured mount prefix is put in front.  Two plugins claiming
 * the same method and path is a start-up error naming both. */
RELAY_API int relay_route(relay_plugin *p, const char *method, const char *pattern, relay_handler handler,
                          relay_auth auth);

typedef struct relay_route_opts {
        uint32_t size; /* sizeof(relay_route_opts) */
        const char *method;
        const char *pattern;
        relay_handler handler;
        relay_auth auth;
        const char *role;  /* required role, or NULL; since 1.1 also a list: "admin operator" */
        const char *scope; /* required scope, or NULL */
        void *data;        /* handed back by relay_route_data() */
        const char *kind;  /* required kind of principal ("agent"), or NULL */
        /* Rate-limit class: the plugin's `rate_limit.CLASS` key applies
         * instead of `rate_limit` ("control" for control-plane routes). */
        const char *rate_class;
        void *reserved[4];
} relay_route_opts;

RELAY_API int relay_route_ex(relay_plugin *p, const relay_route_opts *opts);
/* A tenant route for principals with one of ROLES ("admin operator"):
 * relay_route_ex with only those set.  (ABI 1.1) */
RELAY_API int relay_route_role(relay_plugin *p, const char *method, const char *pattern, relay_handler handler,
                               const char *roles);

/* ------------------------------------------------------------ authenticators */

/* The principal a request runs as.  Strings are copied by relay_set_principal. */
typedef struct relay_principal {
        uint32_t size;             /* sizeof(relay_principal) */
        const char *tenant;        /* tenant id, or NULL */
        const char *subject;       /* user, key or agent id */
        const char *kind;          /* "user", "api_key", "agent", ... */
        const char *role;          /* "admin", "operator", "viewer", or NULL */
        const char *const *scopes; /* NULL-terminated, or NULL */
        const char *credential;    /* id of the credential used (key id), or NULL */
} relay_principal;

typedef enum {
        RELAY_AUTHN_SKIP = 0,  /* no credentials of mine: ask the next authenticator */
        RELAY_AUTHN_OK = 1,    /* relay_set_principal() was called */
        RELAY_AUTHN_DENIED = 2 /* credentials of mine, and they are bad: 401 */
} relay_authn_result;

typedef relay_authn_result (*relay_authenticator_fn)(relay_req *req);

/* Add an authenticator to the chain.  They run in registration order, before
 * any route that is not public, until one answers OK or DENIED. */
RELAY_API int relay_authenticator(relay_plugin *p, const char *name, relay_authenticator_fn fn);
RELAY_API int relay_set_principal(relay_req *req, const relay_principal *principal);
RELAY_API const relay_principal *relay_principal_of(relay_req *req);

/* -------------------------------------------------------------- rate limits */

/* The default limit, in requests a second per tenant, of this plugin's
 * routes (CLASS NULL) or of the routes of a rate class (relay_route_opts).
 * Operators override it with the section's `rate_limit` / `rate_limit.CLASS`
 * keys; `rate_burst` sets the bucket size and `rate_per` = tenant or
 * principal what a bucket counts.  0 means unlimited.  Call in init(). */
RELAY_API int relay_rate_limit(relay_plugin *p, const char *rate_class, double per_second);

/* ------------------------------------------------------------ request hook */

/* Runs FN on the request's worker once each request has its answer (any
 * status, errors and refusals included; for a stream, when it ends), after
 * the access log line.  For observers (the audit log): FN must be quick and
 * must not reply.  relay_principal_of, relay_route_pattern and the other
 * accessors still work.  Call in init().  (ABI 1.2) */
typedef void (*relay_request_done_fn)(relay_plugin *p, relay_req *req, int status, void *data);
RELAY_API int relay_request_hook(relay_plugin *p, relay_request_done_fn fn, void *data);

/* ----------------------------------------------------------- admin commands */

/* `relayctl GROUP NAME ARGS...` runs FN with the daemon's configuration
 * and storage open (relay_plugin_db works), after every plugin's init.  FN
 * prints its result on OUT (JSON when a machine reads it) and returns the
 * exit code: 0 success, 1 failure, 2 bad usage.  Call in init(). */
typedef int (*relay_command_fn)(relay_plugin *p, int argc, char **argv, FILE *out);
RELAY_API int relay_command(relay_plugin *p, const char *group, const char *name, const char *usage,
                            relay_command_fn fn);

/* ----------------------------------------------------------------- services */

/* A service is a table of functions one plugin offers others (the policy
 * engine, the event bus).  The table should start with a size field.  A
 * consumer lists the provider in .requires, so it is initialised first. */
RELAY_API int relay_service_provide(relay_plugin *p, const char *name, unsigned version, const void *api);
/* The service NAME at VERSION or newer, or NULL. */
RELAY_API const void *relay_service_get(relay_plugin *p, const char *name, unsigned min_version);

/* ------------------------------------------------------------- timers, work */

typedef void (*relay_timer_cb)(relay_plugin *p, void *data);

/* Runs CB on the daemon's control thread after FIRST_MS, then every
 * REPEAT_MS (0: once).  Start timers in start(), not init(). */
RELAY_API relay_timer *relay_timer_start(relay_plugin *p, uint64_t first_ms, uint64_t repeat_ms, relay_timer_cb cb,
                                         void *data);
RELAY_API void relay_timer_stop(relay_timer *t);

/* Slow work for a request: WORK runs on the thread pool, then DONE runs on
 * the request's worker and replies.  The handler returns RELAY_ASYNC. */
typedef void (*relay_work_fn)(void *data);
typedef int (*relay_work_done_fn)(relay_req *req, void *data);
RELAY_API int relay_work(relay_req *req, relay_work_fn work, relay_work_done_fn done, void *data);

/* The same for a plugin outside a request: DONE runs on the control thread. */
typedef void (*relay_plugin_work_done_fn)(relay_plugin *p, void *data);
RELAY_API int relay_plugin_work(relay_plugin *p, relay_work_fn work, relay_plugin_work_done_fn done, void *data);

/* ------------------------------------------------------------ health, metrics */

/* Adds fields to the GET / health document (SYN Link adds "protocol"). */
typedef void (*relay_health_fn)(relay_plugin *p, json_t *doc);
RELAY_API int relay_health_hook(relay_plugin *p, relay_health_fn fn);

/* A monotonic counter or a gauge, shown on GET /metrics as
 * relay_plugin_<NAME>{plugin="<plugin>"}.  Safe from any thread. */
RELAY_API relay_counter *relay_counter_new(relay_plugin *p, const char *name, const char *help);
RELAY_API relay_counter *relay_gauge_new(relay_plugin *p, const char *name, const char *help);
RELAY_API void relay_counter_add(relay_counter *c, int64_t n);
RELAY_API void relay_gauge_set(relay_counter *c, int64_t v);

RELAY_END_DECLS
#endif
