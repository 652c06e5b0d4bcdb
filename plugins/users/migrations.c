/* migrations.c - the users plugin's tables.  Secrets are stored only as
 * hashes (hex text, portable across engines); every table but tenants
 * carries its tenant. */
#include "users.h"

const relay_migration users_migrations[] = {
        {1,
         "CREATE TABLE users_tenants (id TEXT PRIMARY KEY, name TEXT NOT NULL, created_ms BIGINT NOT NULL);"
         "CREATE TABLE users_users (tenant TEXT NOT NULL, id TEXT NOT NULL, email TEXT NOT NULL,"
         " role TEXT NOT NULL, last_sync_ms BIGINT, created_ms BIGINT NOT NULL,"
         " PRIMARY KEY (tenant, id), UNIQUE (tenant, email));"
         "CREATE TABLE users_api_keys (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, user_id TEXT, name TEXT,"
         " prefix TEXT NOT NULL, secret_hash TEXT NOT NULL, role TEXT NOT NULL, scopes TEXT NOT NULL,"
         " created_ms BIGINT NOT NULL, expires_ms BIGINT, revoked_ms BIGINT);"
         "CREATE INDEX users_api_keys_tenant ON users_api_keys (tenant, id);"
         "CREATE TABLE users_invites (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, email TEXT NOT NULL,"
         " role TEXT NOT NULL, token_hash TEXT NOT NULL UNIQUE, expires_ms BIGINT NOT NULL, accepted_ms BIGINT,"
         " created_ms BIGINT NOT NULL);"
         "CREATE TABLE users_signing_keys (id TEXT PRIMARY KEY, secret TEXT NOT NULL, created_ms BIGINT NOT NULL);",
         NULL, NULL},
        {0, NULL, NULL, NULL}};
