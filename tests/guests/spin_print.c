/* A healthy long-ish execution: prints N numbered lines with a checksum, computing between them.
 * Used next to misbehaving guests to show they do not disturb it. argv[1] = lines (default 200),
 * argv[2] = hash rounds per line (default 20000). */
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    int lines = argc > 1 ? atoi(argv[1]) : 200;
    int rounds = argc > 2 ? atoi(argv[2]) : 20000;
    unsigned long long h = 1469598103934665603ULL;
    for (int i = 0; i < lines; i++) {
        for (int k = 0; k < rounds; k++) h = (h ^ (unsigned)(i * 31 + k)) * 1099511628211ULL;
        printf("line %d %016llx\n", i, h);
        if (i % 50 == 0) fprintf(stderr, "progress %d\n", i);
    }
    return (int)(h % 7);
}
