/* policies_api.h - the policy engine as a service ("policies", version
 * 1) for other plugins: the sync plugin routes its change feed and its
 * outbound jobs with it.
 *
 *   const policies_api *pol = relay_service_get(p, POLICIES_SERVICE, 1);
 *   policies_set *set;
 *   pol->load(db, tenant, &set);            // the tenant's live policies, compiled
 *   paction act; char name[64];
 *   if (pol->decide(set, record, &act, name, sizeof(name))) ... act.queue, act.defer_ms, act.drop
 *   pol->free(set);
 *
 * A set is a snapshot: load one per request or per batch, not per record. */
#ifndef RELAY_POLICIES_API_H
#define RELAY_POLICIES_API_H

#include <relay/plugin.h>
#include "expr.h"

#define POLICIES_SERVICE "policies"
#define POLICIES_SERVICE_VERSION 1

typedef struct policies_set policies_set;

typedef struct policies_api {
        uint32_t size; /* sizeof(policies_api) */
        int (*load)(relay_db *db, const char *tenant, policies_set **out);
        /* The action of the first policy (by priority, then name) whose
         * `when` holds for FIELDS; false when none does (ACTION zeroed). */
        bool (*decide)(const policies_set *set, const json_t *fields, paction *action, char *name, size_t name_len);
        void (*free)(policies_set *set);
        /* A short text that changes whenever the set's decisions may: it
         * covers the live policies' names, whens and thens, in order (""
         * for a tenant without policies).  The change feed keeps it in its
         * cursor, so a policy change lets held-back changes go out. */
        const char *(*version)(const policies_set *set);
} policies_api;

#endif
