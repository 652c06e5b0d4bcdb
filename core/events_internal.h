/* events_internal.h - the outbox dispatcher and the job runner, driven
 * from the control loop. */
#ifndef RELAY_EVENTS_INTERNAL_H
#define RELAY_EVENTS_INTERNAL_H

#include <stdbool.h>

/* Start the dispatcher and the job poller on the control loop. */
int events_start(void);
int jobs_start(void);
/* Stop them (shutdown): running jobs are left to their lease. */
void events_stop(void);
void jobs_stop(void);
/* A transaction that wrote events / jobs has committed (any thread). */
void events_kick(void);
void jobs_kick(void);
void events_free(void);
void jobs_free(void);

#endif
