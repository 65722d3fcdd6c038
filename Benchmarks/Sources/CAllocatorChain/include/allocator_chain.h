#ifndef ALLOCATOR_CHAIN_H
#define ALLOCATOR_CHAIN_H

/// The file of the loaded object whose `symbol` comes first in the global
/// scope (`dlsym(RTLD_DEFAULT)` then `dladdr`), or NULL if none defines it.
const char *allocator_chain_owner(const char *symbol);

/// The position, in load (search) order, of the first loaded object whose file
/// name contains `fragment`, or -1.
int allocator_chain_load_index(const char *fragment);

#endif
