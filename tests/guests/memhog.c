/* Grows its memory 1 MiB at a time until allocation fails, then aborts (traps) like a program
 * that does not check malloc would crash; prints how far it got on stderr first. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char *volatile last;   /* keeps the compiler from eliding the allocations */
int main(void) {
    size_t total = 0;
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) { fprintf(stderr, "allocation failed after %zu MiB\n", total >> 20); abort(); }
        memset(p, 1, 1 << 20);
        last = p;
        total += 1 << 20;
    }
}
