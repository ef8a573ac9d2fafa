/* Unbounded recursion: wasmtime's stack limit turns it into a trap. */
#include <stdio.h>
int depth(volatile int n) { volatile char pad[256]; pad[0] = (char)n; return depth(n + 1) + pad[0]; }
int main(void) { printf("recursing\n"); fflush(stdout); return depth(0); }
