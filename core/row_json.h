/* row_json.h - relay_row_field rows written straight into a buf. */
#ifndef RELAY_ROW_JSON_H
#define RELAY_ROW_JSON_H

#include <relay/db.h>
#include "buf.h"

/* Appends the current row of R as the object relay_row_json makes, byte
 * for byte what json_write would write of it: 0, or -1 (a text that is
 * not valid UTF-8, out of memory) with O as it was. */
int row_json_write(buf *o, relay_db_result *r, const relay_row_field *fields);

#endif
