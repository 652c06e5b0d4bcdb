/* llhttp_llhttp.c - compiles llhttp.c of the llhttp sources that Debian's
 * node-llhttp package ships (/usr/share/llhttp, on this target's include
 * path only) into librelay, when no libllhttp is installed.  The three
 * sources are separate translation units.  Not our code: its warnings are
 * not ours to fix. */
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <llhttp.c>
