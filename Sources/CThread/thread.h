#ifndef CTHREAD_H
#define CTHREAD_H
#include <pthread.h>

// The calling thread's pthread_t without a call: on x86_64 glibc,
// pthread_self() returns the thread control block's `header.self`, which
// sits at %fs:0x10 (glibc's THREAD_SELF); elsewhere, pthread_self().
// page_pool's ownership check (page_pool_napi_local) runs on every put.
static inline pthread_t dmapools_current_thread(void) {
#if defined(__x86_64__) && defined(__linux__) && defined(__GLIBC__)
    pthread_t self;
    __asm__("movq %%fs:0x10, %0" : "=r"(self));
    return self;
#else
    return pthread_self();
#endif
}
#endif
