// random_get: fills the buffer (not all zero, two draws differ), zero length is fine.
#include <stdio.h>
#include <string.h>
#include <wasi/api.h>
int main(void) {
    unsigned char a[64], b[64];
    memset(a, 0, sizeof a); memset(b, 0, sizeof b);
    printf("random_get=%d\n", __wasi_random_get(a, sizeof a));
    printf("random_get=%d\n", __wasi_random_get(b, sizeof b));
    printf("random_get(0)=%d\n", __wasi_random_get(b, 0));
    int nz = 0; for (int i = 0; i < 64; i++) nz |= a[i];
    printf("nonzero=%d differ=%d\n", nz != 0, memcmp(a, b, 64) != 0);
    return 0;
}
