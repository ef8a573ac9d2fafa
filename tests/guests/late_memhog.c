/* Waits argv[1] seconds (default 3) computing, by its own monotonic clock, then grows its memory
 * 1 MiB at a time, touching every page, without end: past a memory cgroup's limit the kernel's
 * OOM killer kills its worker (tests/integration/test_oom.py). The wait lets the test set the
 * limit once roostd and its spare workers have settled. Prints each 16 MiB on stderr. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
static char *volatile last;   /* keeps the compiler from eliding the allocations */
static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv) {
    double wait = argc > 1 ? atof(argv[1]) : 3.0, start = now();
    volatile unsigned long spins = 0;
    while (now() - start < wait) spins++;
    printf("allocating\n");
    fflush(stdout);
    for (size_t total = 1;; total++) {
        char *p = malloc(1 << 20);
        if (!p) { fprintf(stderr, "allocation failed after %zu MiB\n", total - 1); abort(); }
        memset(p, 1, 1 << 20);
        last = p;
        if (total % 16 == 0) fprintf(stderr, "%zu MiB\n", total);
    }
}
