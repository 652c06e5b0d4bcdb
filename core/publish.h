/* publish.h - fan-out of relay_publish() messages to SSE streams. */
#ifndef RELAY_PUBLISH_H
#define RELAY_PUBLISH_H

#include <stdint.h>
#include "relay/sse.h"

typedef struct worker worker;

void publish_worker_init(worker *w);
void publish_worker_free(worker *w);
/* On W's thread, when woken with WAKE_PUBLISH. */
void publish_drain(worker *w);
/* The stream is closing: its subscriptions end. */
void publish_sse_closed(relay_sse *sse);
int64_t publish_dropped_total(void);

#endif
