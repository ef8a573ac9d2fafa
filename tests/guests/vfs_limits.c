/* Bounded filesystem: argv[1] selects what a malicious guest tries.
 *   sparse  pwrite at 2^40, a write after seeking to 1 GiB, ftruncate to 2^40, then 1 MiB writes
 *           (at most argv[2] of them) until the VFS is full; a write of 2M empty iovecs; then it
 *           computes for 8 s (in its worker, unlike a long sleep) to be measured.
 *   inodes  files until ENOSPC (at most argv[2]); one removed makes room for one more.
 *   links   hard links to one file until EMLINK (at most argv[2]).
 * Errors print by name, so the output reads the same under any errno numbering. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <wasi/api.h>

static const char *ename(int e) {
    switch (e) {
    case 0: return "OK";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case EMLINK: return "EMLINK";
    case EINVAL: return "EINVAL";
    case ENOMEM: return "ENOMEM";
    default: return "other";
    }
}

#define SHOW(label, expr) do { errno = 0; long long _r = (long long)(expr); \
    printf("%s: %s\n", label, _r < 0 ? ename(errno) : "OK"); } while (0)

static volatile unsigned long sink;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static void linger(double seconds) {          /* reads the clock once per million steps */
    double end = now() + seconds;
    while (now() < end)
        for (unsigned long i = 0; i < 1000000; i++) sink += i ^ sink;
}

static void sparse(int max_chunks) {
    int fd = open("sparse.bin", O_CREAT | O_RDWR | O_TRUNC, 0644);
    SHOW("pwrite at 2^40", pwrite(fd, "x", 1, 1LL << 40));
    SHOW("seek to 1 GiB", lseek(fd, 1LL << 30, SEEK_SET));
    SHOW("write at 1 GiB", write(fd, "x", 1));
    SHOW("ftruncate 2^40", ftruncate(fd, 1LL << 40));
    SHOW("seek back", lseek(fd, 0, SEEK_SET));
    char *chunk = malloc(1 << 20);
    for (int i = 0; i < (1 << 20); i++) chunk[i] = (char)(i * 7);
    int n = 0, err = 0;
    for (; n < max_chunks; n++) {
        errno = 0;
        if (write(fd, chunk, 1 << 20) != (1 << 20)) { err = errno; break; }
    }
    printf("1 MiB writes: %s after %s\n", ename(err), n >= 16 ? "at least 16" : "fewer than 16");
    close(fd);
    int fd2 = open("other.bin", O_CREAT | O_WRONLY, 0644);
    SHOW("another file when full", write(fd2, chunk, 1 << 20));
    SHOW("remove the big file", unlink("sparse.bin"));
    SHOW("write after removing it", write(fd2, chunk, 1 << 20));
    close(fd2);
    /* 2M empty iovecs (16 MiB of them): the host scans, it does not copy them all. */
    size_t count = 2u << 20;
    __wasi_ciovec_t *iovs = calloc(count, sizeof *iovs);
    __wasi_size_t written = 99;
    int rc = iovs ? __wasi_fd_write(1, iovs, count, &written) : -1;
    printf("write of %zu empty iovecs: rc=%d written=%u\n", count, rc, (unsigned)written);
    printf("limits reached\n");
    fflush(stdout);
    linger(8.0);
}

static void inodes(int max) {
    mkdir("many", 0755);
    char name[64];
    int n = 0, err = 0;
    for (; n < max; n++) {
        snprintf(name, sizeof name, "many/f%d", n);
        errno = 0;
        int fd = open(name, O_CREAT | O_WRONLY, 0644);
        if (fd < 0) { err = errno; break; }
        close(fd);
    }
    printf("files created: %s (%s)\n", n < max ? "stopped" : "all", ename(err));
    snprintf(name, sizeof name, "many/f%d", n - 1);
    SHOW("remove one", unlink(name));
    int fd = open("many/again", O_CREAT | O_WRONLY, 0644);
    printf("create after removing one: %s\n", fd >= 0 ? "OK" : ename(errno));
    printf("count %d\n", n);
}

static void links(int max) {
    int fd = open("target.txt", O_CREAT | O_WRONLY, 0644);
    write(fd, "data", 4);
    close(fd);
    char name[64];
    int n = 0, err = 0;
    for (; n < max; n++) {
        snprintf(name, sizeof name, "l%d", n);
        errno = 0;
        if (link("target.txt", name) != 0) { err = errno; break; }
    }
    printf("links made: %s (%s)\n", n < max ? "stopped" : "all", ename(err));
    SHOW("remove one link", unlink("l0"));
    SHOW("link again", link("target.txt", "l0"));
    printf("count %d\n", n);
}

int main(int argc, char **argv) {
    chdir("/data");
    const char *mode = argc > 1 ? argv[1] : "sparse";
    int max = argc > 2 ? atoi(argv[2]) : 100;
    if (!strcmp(mode, "sparse")) sparse(max);
    else if (!strcmp(mode, "inodes")) inodes(max);
    else if (!strcmp(mode, "links")) links(max);
    return 0;
}
