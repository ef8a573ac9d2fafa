// Exits through proc_exit with the code in argv[1] (or traps on an invalid one).
#include <stdlib.h>
#include <stdio.h>
#include <stdint.h>
#include <wasi/api.h>
__attribute__((import_module("wasi_snapshot_preview1"), import_name("proc_raise"))) int32_t raw_proc_raise(int32_t sig);
int main(int argc, char **argv) {
    printf("exiting with %s\n", argc > 1 ? argv[1] : "0");
    fflush(stdout);
    printf("proc_raise=%d\n", raw_proc_raise(15));
    fflush(stdout);
    __wasi_proc_exit(argc > 1 ? atoi(argv[1]) : 0);
}
