/* Keeps files open while it computes, for migrations and restores in the middle: appends a
 * numbered record with a running hash to /data/journal.txt each step (one fd open all along),
 * rewrites a fixed-size /data/state.bin in place through a second fd (seek + write), and every
 * 50 steps reads both back through a third fd and prints what it read. At the end it prints the
 * journal's length and a checksum of everything it wrote.
 *
 *   file_journal STEPS ROUNDS      (ROUNDS: hash rounds of computing per step) */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static unsigned long long fnv(const char *p, size_t n, unsigned long long h) {
    while (n--) h = (h ^ (unsigned char)*p++) * 1099511628211ULL;
    return h;
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 500;
    long rounds = argc > 2 ? atol(argv[2]) : 200000;
    FILE *journal = fopen("/data/journal.txt", "a+");
    int state = open("/data/state.bin", O_RDWR | O_CREAT, 0644);
    if (!journal || state < 0) { perror("open"); return 1; }
    unsigned long long h = 1469598103934665603ULL, all = h;
    char line[128], block[256];
    for (int i = 0; i < steps; i++) {
        for (long k = 0; k < rounds; k++) h = (h ^ (unsigned)(i * 31 + k)) * 1099511628211ULL;
        int n = snprintf(line, sizeof line, "step %d %016llx\n", i, h);
        fputs(line, journal);
        fflush(journal);
        all = fnv(line, n, all);
        memset(block, 'a' + i % 26, sizeof block);
        lseek(state, (off_t)(i % 16) * sizeof block, SEEK_SET);
        write(state, block, sizeof block);
        if (i % 50 == 49) {
            int r = open("/data/journal.txt", O_RDONLY);
            off_t size = lseek(r, 0, SEEK_END);
            lseek(r, size - n, SEEK_SET);
            char back[128] = {0};
            read(r, back, n);
            close(r);
            char first = 0;
            pread(state, &first, 1, 0);
            printf("at %d: journal %lld bytes, last: %s", i, (long long)size, back);
            printf("state starts with %c\n", first);
            fflush(stdout);
        }
    }
    fseek(journal, 0, SEEK_END);
    printf("journal %ld bytes, checksum %016llx\n", ftell(journal), all);
    fclose(journal);
    close(state);
    return (int)(h % 5);
}
