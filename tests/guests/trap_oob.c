/* Prints a line, then reads far outside linear memory (an out-of-bounds trap). */
#include <stdio.h>
#include <stdint.h>
int main(void) {
    printf("about to read out of bounds\n"); fflush(stdout);
    volatile uint32_t *p = (uint32_t *)(uintptr_t)0xfffffff0u;
    return (int)*p;
}
