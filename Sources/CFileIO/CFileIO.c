#define _GNU_SOURCE
#include "CFileIO.h"
#include <fcntl.h>
#include <errno.h>

int depot_start_writeback(int fd, int64_t offset, int64_t length) {
#if defined(__linux__)
    return sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int depot_set_thread_nice(int nice) {
    return setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice);
}
#else
int depot_set_thread_nice(int nice) { (void)nice; return 0; }
#endif

#if defined(__GLIBC__)
#include <malloc.h>
#include <stdlib.h>
int depot_limit_malloc_arenas(int arenas) {
    if (getenv("MALLOC_ARENA_MAX") != NULL) return 0;
    return mallopt(M_ARENA_MAX, arenas) == 1 ? 0 : -1;
}
#else
int depot_limit_malloc_arenas(int arenas) { (void)arenas; return 0; }
#endif

#if defined(__linux__)
#include <pthread.h>
int depot_name_thread(const char *name) { return pthread_setname_np(pthread_self(), name); }
#else
int depot_name_thread(const char *name) { (void)name; return 0; }
#endif
