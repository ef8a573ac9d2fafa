/* Host-call arguments that size an allocation, at their extremes: a very long path and name,
 * 2M empty iovecs, poll with 2^64-1 timeouts next to a ready descriptor,
 * far seeks, and timestamps at 2^64-1 ns. Prints results roost and wasmtime agree on. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <wasi/api.h>

int main(void) {
    chdir("/data");
    char *longpath = malloc(5001);
    memset(longpath, 'a', 5000);
    longpath[5000] = 0;
    errno = 0;
    printf("open 5000-byte path: %d errno %d\n", open(longpath, O_RDONLY), errno);
    memset(longpath, 'b', 300);
    longpath[300] = 0;
    errno = 0;
    printf("create 300-byte name: %d errno %d\n", open(longpath, O_CREAT | O_WRONLY, 0644), errno);

    size_t pages = __builtin_wasm_memory_size(0);
    uint8_t *end = (uint8_t *)(pages * 65536);
    printf("random_get 16: %d\n", __wasi_random_get(end - 16, 16));

    size_t count = 2u << 20;
    __wasi_ciovec_t *iovs = calloc(count, sizeof *iovs);
    __wasi_size_t n = 99;
    printf("fd_write of 2M empty iovecs: %d n=%u\n", __wasi_fd_write(1, iovs, count, &n), (unsigned)n);

    __wasi_subscription_t subs[2];
    __wasi_event_t evs[2];
    memset(subs, 0, sizeof subs);
    subs[0].userdata = 1;
    subs[0].u.tag = __WASI_EVENTTYPE_CLOCK;
    subs[0].u.u.clock.id = __WASI_CLOCKID_MONOTONIC;
    subs[0].u.u.clock.timeout = UINT64_MAX;
    subs[1].userdata = 2;
    subs[1].u.tag = __WASI_EVENTTYPE_FD_WRITE;
    subs[1].u.u.fd_write.file_descriptor = 1;
    n = 0;
    int rc = __wasi_poll_oneoff(subs, evs, 2, &n);
    printf("poll u64max + stdout: %d n=%u ud=%llu\n", rc, (unsigned)n, n ? (unsigned long long)evs[0].userdata : 0ull);

    int fd = open("f.txt", O_CREAT | O_RDWR, 0644);
    write(fd, "abc", 3);
    __wasi_filesize_t pos = 0;
    printf("seek -1 from start: %d\n", __wasi_fd_seek(fd, -1, __WASI_WHENCE_SET, &pos));
    printf("set times u64max: %d\n", __wasi_fd_filestat_set_times(fd, UINT64_MAX, UINT64_MAX,
           __WASI_FSTFLAGS_ATIM | __WASI_FSTFLAGS_MTIM));
    printf("ftruncate -1: %d errno %d\n", ftruncate(fd, -1), errno);
    close(fd);
    printf("done\n");
    return 0;
}
