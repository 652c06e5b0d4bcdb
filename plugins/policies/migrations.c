/* migrations.c - policies and their versions.  A policy is a named,
 * versioned rule set of a tenant: RelaySync's {"name","when","then"} is
 * one rule; RelayOne's YAML policies will store their rules in `doc`.
 * An update writes a new version row and moves the policy's version in
 * one transaction (published atomically); a delete only sets deleted_ms,
 * so anything that refers to a policy version keeps resolving. */
#include "policies.h"

const relay_migration policies_migrations[] = {
        {1,
         "CREATE TABLE policies_policies (tenant TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL,"
         " version INTEGER NOT NULL, priority INTEGER NOT NULL, when_src TEXT NOT NULL, then_src TEXT NOT NULL,"
         " doc TEXT NOT NULL, created_ms BIGINT NOT NULL, updated_ms BIGINT NOT NULL, deleted_ms BIGINT,"
         " PRIMARY KEY (tenant, id), UNIQUE (tenant, name));"
         "CREATE TABLE policies_versions (tenant TEXT NOT NULL, policy_id TEXT NOT NULL, version INTEGER NOT NULL,"
         " doc TEXT NOT NULL, created_ms BIGINT NOT NULL, created_by TEXT,"
         " PRIMARY KEY (tenant, policy_id, version));",
         NULL, NULL},
        {0, NULL, NULL, NULL}};
