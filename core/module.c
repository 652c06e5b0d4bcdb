/* module.c - opening plugin and driver modules with libltdl. */
#include <stdio.h>
#include "module.h"

lt_dlhandle module_open(const char *dir, const char *name)
{
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        lt_dladvise advise;
        if (lt_dladvise_init(&advise) != 0)
                return NULL;
        lt_dladvise_ext(&advise);
        lt_dladvise_local(&advise);
        lt_dlhandle h = lt_dlopenadvise(path, advise);
        lt_dladvise_destroy(&advise);
        return h;
}
