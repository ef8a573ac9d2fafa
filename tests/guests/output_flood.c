/* Writes argv[1] MiB to stdout in 64 KiB writes, then "done". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    int mib = argc > 1 ? atoi(argv[1]) : 4;
    static char buf[65536];
    memset(buf, 'o', sizeof buf);
    buf[sizeof buf - 1] = '\n';
    for (int i = 0; i < mib * 16; i++)
        if (write(1, buf, sizeof buf) != (ssize_t)sizeof buf) return 1;
    printf("done\n");
    return 0;
}
