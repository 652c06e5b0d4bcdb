/* policies.h - the policies plugin's parts: storage of versioned,
 * soft-deletable policies, the compiled sets the engine evaluates, and
 * the routes. */
#ifndef RELAY_POLICIES_H
#define RELAY_POLICIES_H

#include <string.h>
#include <relay/plugin.h>
#include "policies_api.h"

extern const relay_migration policies_migrations[];
extern relay_plugin *policies_self;

#define POLICY_NAME_MAX 64

/* The order policies apply in: priority, then name as bytes.  SQLite
 * compares text as bytes; a PostgreSQL database's default collation may
 * be linguistic (en_US.UTF-8: "bulk" before "Urgent", "_x" before ".y"),
 * which would route the same records differently on the two engines, so
 * PostgreSQL is told "C"; POLICIES_IS_PGSQL(db) picks the clause. */
#define POLICIES_ORDER_BYTES " ORDER BY priority, name"
#define POLICIES_ORDER_PGSQL " ORDER BY priority, name COLLATE \"C\""
#define POLICIES_IS_PGSQL(db) (strcmp(relay_db_dialect(db), "pgsql") == 0)

/* The columns every policy query selects, in this order. */
#define POLICY_COLUMNS "id, name, version, priority, when_src, then_src, created_ms, updated_ms, deleted_ms"

json_t *policy_json(relay_db_result *r);

/* engine.c */
int policies_load(relay_db *db, const char *tenant, policies_set **out);
bool policies_decide(const policies_set *set, const json_t *fields, paction *action, char *name, size_t name_len);
void policies_free(policies_set *set);
const char *policies_version(const policies_set *set);
/* Checks a `when` and a `then`; on failure fills the 422 body (code,
 * message, field, position, pointer) into *ERROR and returns false. */
bool policies_check(const char *when, const char *then, json_t **error);

/* routes.c */
int policies_routes_register(relay_plugin *p);

#endif
