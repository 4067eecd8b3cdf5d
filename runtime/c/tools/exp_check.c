/* exp-check: float32 values on stdin (raw, native byte order) -> estella_numpy_expf of each on
 * stdout, for the tests to compare with numpy's own np.exp on the same machine. */
#include <stdio.h>

#include "sampling.h"

int main(void) {
    float block[4096];
    size_t n;
    while ((n = fread(block, sizeof *block, sizeof block / sizeof *block, stdin)) > 0) {
        for (size_t i = 0; i < n; i++)
            block[i] = estella_numpy_expf(block[i]);
        if (fwrite(block, sizeof *block, n, stdout) != n)
            return 1;
    }
    return 0;
}
