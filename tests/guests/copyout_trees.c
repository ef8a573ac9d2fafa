/* Trees that `roost cp` must copy out safely, built under the preopened /work.
 *
 *   swap            /work/out/x -> ../../victim, then (once the guest notices it was paused and
 *                   resumed: a jump of its monotonic clock) x swapped for a directory holding
 *                   pwned.txt - the two-step attack on a user who copies /work/out twice
 *   hardlinks N KB  /work/h/data of KB KiB and N more names of it (link)
 *   deep N          N nested directories /work/deep/dir/dir/... with bottom.txt in the last
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void fail(const char *what) { perror(what); exit(2); }

/* By full path: roost gives a directory opened with open(O_RDONLY | O_DIRECTORY) no write
 * rights to inherit, so openat(dirfd, name, O_WRONLY) from it fails with EBADF on write. */
static void write_file(const char *path, const char *data, size_t n) {
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    if (fd < 0) fail(path);
    for (size_t off = 0; off < n;) {
        ssize_t w = write(fd, data + off, n - off);
        if (w <= 0) fail("write");
        off += (size_t)w;
    }
    close(fd);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

/* Spins until the clock jumps by more than 1.5 s between two looks (a pause and a resume). */
static int wait_for_resume(void) {
    volatile unsigned long sink = 0;
    double start = now(), last = start;
    for (;;) {
        for (unsigned long i = 0; i < 1000000; i++) sink += i;
        double t = now();
        if (t - last > 1.5) return 0;
        if (t - start > 120) return -1;
        last = t;
    }
}

static int swap(void) {
    if (mkdir("/work/out", 0755) || symlink("../../victim", "/work/out/x")) fail("plant");
    printf("planted\n");
    fflush(stdout);
    if (wait_for_resume()) { printf("never paused\n"); return 3; }
    if (mkdir("/work/out/new", 0755)) fail("mkdir new");
    write_file("/work/out/new/pwned.txt", "pwned\n", 6);
    if (unlink("/work/out/x") || rename("/work/out/new", "/work/out/x")) fail("swap");
    printf("swapped\n");
    return 0;
}

static int hardlinks(int n, long kib) {
    if (mkdir("/work/h", 0755)) fail("mkdir h");
    size_t size = (size_t)kib * 1024;
    char *data = malloc(size);
    for (size_t i = 0; i < size; i++) data[i] = (char)(i * 2654435761u >> 13);
    write_file("/work/h/data", data, size);
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "/work/h/link-%03d", i);
        if (link("/work/h/data", name)) fail("link");
    }
    printf("linked %d\n", n);
    return 0;
}

static int deep(int n) {
    if (mkdir("/work/deep", 0755)) fail("mkdir deep");
    int fd = open("/work/deep", O_RDONLY | O_DIRECTORY);
    for (int i = 0; i < n; i++) {
        if (mkdirat(fd, "dir", 0755)) fail("mkdirat");
        int next = openat(fd, "dir", O_RDONLY | O_DIRECTORY);
        if (next < 0) fail("openat");
        close(fd);
        fd = next;
    }
    char text[32];
    int len = snprintf(text, sizeof text, "deep %d\n", n);
    write_file("/work/bottom.txt", text, (size_t)len);      /* then moved to the bottom */
    int work = open("/work", O_RDONLY | O_DIRECTORY);
    if (renameat(work, "bottom.txt", fd, "bottom.txt")) fail("renameat");
    printf("nested %d\n", n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "swap")) return swap();
    if (argc >= 4 && !strcmp(argv[1], "hardlinks")) return hardlinks(atoi(argv[2]), atol(argv[3]));
    if (argc >= 3 && !strcmp(argv[1], "deep")) return deep(atoi(argv[2]));
    fprintf(stderr, "usage: copyout_trees swap | hardlinks N KIB | deep N\n");
    return 64;
}
