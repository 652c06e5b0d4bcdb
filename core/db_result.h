/* db_result.h - the result container behind relay_db_result. */
#ifndef RELAY_DB_RESULT_H
#define RELAY_DB_RESULT_H

#include "relay/driver.h"

relay_db_result *db_result_new(void);

#endif
