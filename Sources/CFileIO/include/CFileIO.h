#ifndef DEPOT_CFILEIO_H
#define DEPOT_CFILEIO_H

#include <stdint.h>

/// Starts writeback of a file range without waiting for it (Linux sync_file_range with
/// SYNC_FILE_RANGE_WRITE), so a long write does not end with one huge fsync.
/// Returns 0 or -1 with errno set; a no-op returning 0 where the call does not exist.
int depot_start_writeback(int fd, int64_t offset, int64_t length);

/// Lowers the calling thread's scheduling priority to `nice` (Linux: per thread), so
/// background hashing yields the cores to request work. Returns 0 or -1 with errno set.
int depot_set_thread_nice(int nice);

/// Caps glibc's malloc arenas (M_ARENA_MAX) unless MALLOC_ARENA_MAX is set. glibc makes up
/// to 8 per core, one per thread that allocates at once; each keeps memory it freed, so a
/// server with many short-lived transfer threads grows its RSS without holding more data.
/// Returns 0, or -1 when the setting was refused.
int depot_limit_malloc_arenas(int arenas);

/// Names the calling thread (at most 15 bytes show), for ps, top and perf. Returns 0 or an
/// error number.
int depot_name_thread(const char *name);

/// Room for Linux's `struct tcp_info` as getsockopt(IPPROTO_TCP, TCP_INFO) fills it: the
/// kernel writes at most this many bytes, and a kernel with a shorter struct leaves the rest
/// as the caller set it (zero).
typedef struct { uint64_t words[40]; } depot_tcp_info;

/// What a `depot_tcp_info` says of a TCP connection's progress: the bytes its peer has
/// acknowledged and the bytes received from it (`tcpi_bytes_acked`, `tcpi_bytes_received`,
/// Linux 4.1 and later), and what of ours is still queued: bytes not sent yet
/// (`tcpi_notsent_bytes`, Linux 4.6 and later) and segments sent but not acknowledged
/// (`tcpi_unacked`). Each is 0 where the kernel did not fill it.
void depot_tcp_info_progress(const depot_tcp_info *info, uint64_t *bytes_acked, uint64_t *bytes_received, uint32_t *bytes_not_sent, uint32_t *segments_unacked);

#endif
