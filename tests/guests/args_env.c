// argv and environment, via libc and via the raw WASI size queries.
#include <stdio.h>
#include <stdlib.h>
#include <wasi/api.h>
extern char **environ;
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; *e; e++) printf("env %s\n", *e);
    __wasi_size_t n, sz;
    printf("args_sizes_get=%d ", __wasi_args_sizes_get(&n, &sz));
    printf("%lu %lu\n", (unsigned long)n, (unsigned long)sz);
    printf("environ_sizes_get=%d ", __wasi_environ_sizes_get(&n, &sz));
    printf("%lu %lu\n", (unsigned long)n, (unsigned long)sz);
    const char *h = getenv("HOME");
    printf("HOME=%s\n", h ? h : "(unset)");
    return 0;
}
