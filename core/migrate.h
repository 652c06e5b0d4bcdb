/* migrate.h - schema migrations: the core's own tables, then each plugin's. */
#ifndef RELAY_MIGRATE_H
#define RELAY_MIGRATE_H

#include <stdbool.h>
#include <stdio.h>
#include "relay/db.h"

/* Applies what is pending, per owner in one transaction.  0, or -1 with
 * "plugin X migration V failed on ENGINE: ..." in ERR. */
int migrate_apply(relay_db *db, char *err, size_t err_len);
/* Prints applied and pending versions per owner (relayctl db status);
 * returns the number pending, or -1. */
int migrate_status(relay_db *db, FILE *out, char *err, size_t err_len);
void migrate_free(void);

#endif
