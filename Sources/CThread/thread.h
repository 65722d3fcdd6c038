#ifndef CTHREAD_H
#define CTHREAD_H
#ifndef _GNU_SOURCE
#define _GNU_SOURCE   // cpu_set_t and pthread_setaffinity_np
#endif
#include <pthread.h>
#include <sched.h>

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

// Binds the calling thread to CPU `cpu` (sched_setaffinity on itself):
// 0 on success, else an errno value. For machine probes that must measure
// two particular CPUs, never for the model's own threads.
static inline int dmapools_pin_current_thread(int cpu) {
    if (cpu < 0 || cpu >= CPU_SETSIZE) return 22;  // EINVAL
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}
#endif
