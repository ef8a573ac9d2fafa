/* The smallest useful guest: one line out, exit 0 (execution start-up cost). */
#include <stdio.h>
int main(void) { puts("hello"); return 0; }
