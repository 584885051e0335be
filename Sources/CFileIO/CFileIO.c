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

#if defined(__linux__)
// Linux's own definition, not glibc's older copy in <netinet/tcp.h>, which stops before the
// byte counters.
#include <linux/tcp.h>
#include <stddef.h>
#include <string.h>
_Static_assert(sizeof(struct tcp_info) <= sizeof(depot_tcp_info), "depot_tcp_info holds struct tcp_info");

void depot_tcp_info_progress(const depot_tcp_info *info, uint64_t *bytes_acked, uint64_t *bytes_received, uint32_t *bytes_not_sent, uint32_t *segments_unacked) {
    const char *bytes = (const char *)info;
    memcpy(bytes_acked, bytes + offsetof(struct tcp_info, tcpi_bytes_acked), sizeof(uint64_t));
    memcpy(bytes_received, bytes + offsetof(struct tcp_info, tcpi_bytes_received), sizeof(uint64_t));
    memcpy(bytes_not_sent, bytes + offsetof(struct tcp_info, tcpi_notsent_bytes), sizeof(uint32_t));
    memcpy(segments_unacked, bytes + offsetof(struct tcp_info, tcpi_unacked), sizeof(uint32_t));
}
#else
void depot_tcp_info_progress(const depot_tcp_info *info, uint64_t *bytes_acked, uint64_t *bytes_received, uint32_t *bytes_not_sent, uint32_t *segments_unacked) {
    (void)info;
    *bytes_acked = 0;
    *bytes_received = 0;
    *bytes_not_sent = 0;
    *segments_unacked = 0;
}
#endif
