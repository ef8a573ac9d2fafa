/* Prints a line, then traps (wasm `unreachable` via __builtin_trap). */
#include <stdio.h>
int main(void) { printf("about to trap\n"); fflush(stdout); __builtin_trap(); }
