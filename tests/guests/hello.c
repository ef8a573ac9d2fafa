#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    printf("hello from %s\n", argv[0]);
    fprintf(stderr, "to stderr: %d args\n", argc);
    fflush(stdout);
    for (int i = 0; i < 3; i++) printf("line %d\n", i);
    return argc > 1 ? atoi(argv[1]) : 0;
}
