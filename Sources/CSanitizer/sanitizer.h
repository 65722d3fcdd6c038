#ifndef CSANITIZER_H
#define CSANITIZER_H
// ThreadSanitizer's annotation interface (compiler-rt, tsan_interface.h).
// Declarations only: the symbols exist in a process built with
// -sanitize=thread, and Swift code calls them only under DMAPOOLS_TSAN.
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#endif
