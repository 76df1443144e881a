/* version.c - `distill --version`: distill's version, then the version of each library it runs
 * with, as the loaded library reports it (not the headers it was built against), since a bug
 * report needs what actually ran. */
#include <cJSON.h>
#include <protobuf-c/protobuf-c.h>
#include <zlib.h>

#include "cli.h"
#include "kd_dist.h"
#include "kd_gemm.h"

void kd_cli_print_version(FILE *f) {
    fprintf(f, "distill %s\n", KD_VERSION);
    /* openblas_get_config() starts with "OpenBLAS <version>"; the build kind follows it, since a
     * pthreads OpenBLAS loaded by mistake would fight distill's OpenMP pool. */
    fprintf(f, "%s (%s)\n", kd_blas_config(),
            kd_blas_is_openmp() ? "OpenMP build" : "not the OpenMP build");
    fprintf(f, "cJSON %s\n", cJSON_Version());
    fprintf(f, "zlib %s\n", zlibVersion());
    fprintf(f, "protobuf-c %s\n", protobuf_c_version());
    const char *mpi = kd_dist_library();
    if (mpi) fprintf(f, "%s\n", mpi);
}
