/* idempotency_internal.h - the purge of expired Idempotency-Key outcomes,
 * on the control loop. */
#ifndef RELAY_IDEMPOTENCY_INTERNAL_H
#define RELAY_IDEMPOTENCY_INTERNAL_H

int idem_start(void);
void idem_stop(void);

#endif
