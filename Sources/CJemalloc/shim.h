#ifndef CJEMALLOC_SHIM_H
#define CJEMALLOC_SHIM_H
// Debian's libjemalloc-dev (5.3.0): unprefixed symbols (mallocx, sdallocx, mallctl).
#include <jemalloc/jemalloc.h>
#endif
