/* VFS timestamps across a restore. Prints "ready" and computes until its clock jumps by more than
 * a second between two reads (it was paused: the checkpoint is taken before anything below), then
 * creates a file and a directory and prints their mtimes, computes argv[1] seconds more (its worker
 * is killed then, and the execution restored from the pause's checkpoint), and prints the mtimes
 * again: the same, since the restored run stamps the times the original journaled. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static volatile unsigned long sink;

static void spin(unsigned long steps) {
    for (unsigned long i = 0; i < steps; i++) sink += i ^ sink;
}

static void compute(double seconds) {        /* reads the clock once per million steps */
    double end = now() + seconds;
    while (now() < end) spin(1000000);
}

static void until_paused(double give_up) {
    double start = now(), before = start;
    for (;;) {
        spin(100000);
        double t = now();
        if (t - before > 1.0 || t - start > give_up) return;
        before = t;
    }
}

static long long mtime_ns(const char *path) {
    struct stat st;
    if (stat(path, &st)) return -1;
    return st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
}

int main(int argc, char **argv) {
    double after = argc > 1 ? atof(argv[1]) : 2.0;
    chdir("/data");
    printf("ready\n");
    fflush(stdout);
    until_paused(60.0);
    int fd = open("stamped.txt", O_CREAT | O_WRONLY | O_TRUNC, 0644);
    write(fd, "stamped\n", 8);
    close(fd);
    mkdir("made", 0755);
    long long first = mtime_ns("stamped.txt"), dir_first = mtime_ns("made");
    printf("mtime1 %lld %lld\n", first, dir_first);
    fflush(stdout);
    compute(after);
    long long second = mtime_ns("stamped.txt"), dir_second = mtime_ns("made");
    printf("mtime2 %lld %lld\n", second, dir_second);
    printf("same: %s\n", first == second && dir_first == dir_second ? "yes" : "no");
    return 0;
}
