#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>
#include "allocator_chain.h"

const char *allocator_chain_owner(const char *symbol) {
    void *address = dlsym(RTLD_DEFAULT, symbol);
    Dl_info info;
    if (address == NULL || dladdr(address, &info) == 0) return NULL;
    return info.dli_fname;
}

struct search { const char *fragment; int index; int found; };

static int visit(struct dl_phdr_info *info, size_t size, void *context) {
    (void)size;
    struct search *s = context;
    if (s->found < 0 && info->dlpi_name != NULL && strstr(info->dlpi_name, s->fragment) != NULL) s->found = s->index;
    s->index++;
    return 0;
}

int allocator_chain_load_index(const char *fragment) {
    struct search s = { fragment, 0, -1 };
    dl_iterate_phdr(visit, &s);
    return s.found;
}
