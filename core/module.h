/* module.h - opening plugin and driver modules with libltdl. */
#ifndef RELAY_MODULE_H
#define RELAY_MODULE_H

#include <ltdl.h>

/* Opens DIR/NAME: NAME.la when there is one (build trees), else NAME.so
 * (distributions delete .la files), with the module's symbols kept local
 * to it.  NULL on failure; lt_dlerror() says why. */
lt_dlhandle module_open(const char *dir, const char *name);

#endif
