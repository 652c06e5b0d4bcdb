/* tenants.c - bootstrapping from the command line:
 *   relayctl tenant create NAME   -> {"tenant_id", "api_key"} (a first admin key)
 *   relayctl user list --tenant ID */
#include <stdio.h>
#include <string.h>
#include <sodium.h>
#include "users.h"

static int cmd_tenant_create(relay_plugin *p, int argc, char **argv, FILE *out)
{
        if (argc < 1 || !*argv[0] || strlen(argv[0]) > 200) {
                fprintf(stderr, "usage: relayctl tenant create NAME\n");
                return 2;
        }
        relay_db *db = relay_plugin_db(p);
        char tenant[40], key[USERS_KEY_LEN], key_id[40];
        relay_id_new("ten_", tenant, sizeof(tenant));
        key_spec spec = {.tenant = tenant, .role = "admin", .name = "bootstrap", .scopes = "*"};
        int rc = relay_db_begin(db);
        if (rc == RELAY_DB_OK)
                rc = relay_db_exec(db, NULL, "INSERT INTO users_tenants (id, name, created_ms) VALUES (?, ?, ?)", "ssi",
                                   tenant, argv[0], relay_now_ms());
        if (rc == RELAY_DB_OK)
                rc = keys_create(p, db, &spec, key, key_id);
        if (rc == RELAY_DB_OK)
                rc = relay_event_emit(db, tenant, "tenant.created",
                                      json_pack("{s:s,s:s}", "id", tenant, "name", argv[0]), NULL);
        rc = rc == RELAY_DB_OK ? relay_db_commit(db) : (relay_db_rollback(db), rc);
        if (rc != RELAY_DB_OK) {
                fprintf(stderr, "relayctl: cannot create the tenant: %s\n", relay_db_errmsg(db));
                return 1;
        }
        json_t *doc =
                json_pack("{s:s,s:s,s:s,s:s}", "tenant_id", tenant, "name", argv[0], "key_id", key_id, "api_key", key);
        sodium_memzero(key, sizeof(key)); /* the JSON holds its own copy */
        return users_print(out, doc);
}

static int cmd_user_list(relay_plugin *p, int argc, char **argv, FILE *out)
{
        const char *tenant;
        int bad = users_tenant_arg(p, argc, argv, "relayctl user list --tenant ID", &tenant);
        if (bad)
                return bad;
        relay_db *db = relay_plugin_db(p);
        relay_db_result *r;
        if (relay_db_query(db, &r, "SELECT id, email, role FROM users_users WHERE tenant = ? ORDER BY id", "s",
                           tenant) != RELAY_DB_OK) {
                fprintf(stderr, "relayctl: %s\n", relay_db_errmsg(db));
                return 1;
        }
        json_t *users = json_array();
        while (relay_db_next(r))
                json_array_append_new(users, json_pack("{s:s,s:s,s:s}", "id", relay_db_text(r, 0), "email",
                                                       relay_db_text(r, 1), "role", relay_db_text(r, 2)));
        relay_db_free(r);
        return users_print(out, users);
}

int tenants_register(relay_plugin *p)
{
        if (relay_command(p, "tenant", "create", "make a tenant and its first admin API key", cmd_tenant_create) ||
            relay_command(p, "user", "list", "a tenant's users", cmd_user_list))
                return RELAY_ERR;
        return RELAY_OK;
}
