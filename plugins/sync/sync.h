/* sync.h - the sync plugin's parts: the change feed for offline clients,
 * the batch push for clients coming back online, the outbound queue and
 * the jobs that mark records synced. */
#ifndef RELAY_SYNC_H
#define RELAY_SYNC_H

#include <relay/plugin.h>
#include "../records/records_api.h"
#include "../policies/policies_api.h"

extern relay_plugin *sync_self;
extern const records_api *sync_records;
extern const policies_api *sync_policies;

#define SYNC_JOB_KIND "record.sync"

int sync_feed_register(relay_plugin *p);
int sync_push_register(relay_plugin *p);
int sync_queue_register(relay_plugin *p);
int sync_outbound_register(relay_plugin *p);

#endif
