/* dist.c - the ranks of a data-parallel job and its collectives (kd_dist.h): Open MPI when built
 * with `make MPI=1` (KD_MPI defined; the only file that includes <mpi.h>), one rank and no
 * communication otherwise. The shard split, the checksum and the pack buffer are the same in
 * both builds. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "kd_dist.h"

#ifdef KD_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1;
static double g_comm_s = 0.0;
static uint64_t g_comm_calls = 0;

void kd_dist_shard(size_t n, size_t rank, size_t size, size_t *lo, size_t *hi) {
    KD_ASSERT(size > 0 && rank < size);
    /* The first n % size shards hold q + 1 rows, the others q. */
    const size_t q = n / size, extra = n % size;
    *lo = rank * q + (rank < extra ? rank : extra);
    *hi = *lo + q + (rank < extra);
}

uint64_t kd_dist_hash(uint64_t h, const void *data, size_t bytes) {
    const unsigned char *p = data;
    const uint64_t prime = 0x100000001b3ull;
    size_t i = 0;
    for (; i + 8 <= bytes; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * prime;
        h ^= h >> 29;  /* words differ in their high bits too: fold them down */
    }
    for (; i < bytes; i++) h = (h ^ p[i]) * prime;
    return h;
}

kd_status kd_dist_pack_init(kd_dist_pack *p, size_t n_grads, size_t n_extra, kd_err *err) {
    memset(p, 0, sizeof *p);
    size_t n;
    if (kd_add_size(n_grads, n_extra, &n) || !(p->buf = kd_alloc_floats(n ? n : 1)))
        return kd_err_set(err, KD_EIO, "out of memory for the data-parallel gradient buffer");
    p->n_grads = n_grads;
    p->n_extra = n_extra;
    return KD_OK;
}

void kd_dist_pack_free(kd_dist_pack *p) {
    if (!p) return;
    kd_free_aligned(p->buf);
    p->buf = NULL;
}

void kd_dist_pack_unpack(const kd_dist_pack *p, float *grads, float scale) {
    if (scale == 1.0f) {
        memcpy(grads, p->buf, p->n_grads * sizeof *grads);
        return;
    }
    for (size_t i = 0; i < p->n_grads; i++) grads[i] = p->buf[i] * scale;
}

double kd_dist_comm_seconds(void) { return g_comm_s; }
uint64_t kd_dist_comm_calls(void) { return g_comm_calls; }
int kd_dist_rank(void) { return g_rank; }
int kd_dist_size(void) { return g_size; }

#ifdef KD_MPI

/* MPI counts are ints: a longer buffer goes in pieces of at most 2^30 elements. */
#define CHUNK ((size_t)1 << 30)

static char g_backend[64];
static int g_mpi = 0;  /* MPI_Init done and MPI_Finalize not yet */

kd_status kd_dist_init(kd_err *err) {
    if (g_mpi) return KD_OK;
    /* Only a process that mpirun (or srun, through PMIx) started joins a job: a plain `distill
     * train` of the MPI build stays one process without MPI's singleton start-up (~0.4 s). */
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK")) return KD_OK;
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return kd_err_set(err, KD_EIO, "MPI_Init_thread failed");
    g_mpi = 1;
    if (provided < MPI_THREAD_FUNNELED)
        return kd_err_set(err, KD_EIO, "this MPI library gives thread level %d; distill needs "
                          "MPI_THREAD_FUNNELED (%d)", provided, MPI_THREAD_FUNNELED);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    return KD_OK;
}

void kd_dist_finalize(void) {
    if (!g_mpi) return;
    MPI_Finalize();
    g_mpi = 0;
}

_Noreturn void kd_dist_abort(int code) {
    if (g_mpi) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code);
}

const char *kd_dist_backend(void) {
    int major = 0, minor = 0, release = 0;
#if defined(OMPI_MAJOR_VERSION)
    major = OMPI_MAJOR_VERSION;
    minor = OMPI_MINOR_VERSION;
    release = OMPI_RELEASE_VERSION;
    snprintf(g_backend, sizeof g_backend, "Open MPI %d.%d.%d", major, minor, release);
#else
    (void)major, (void)minor, (void)release;
    snprintf(g_backend, sizeof g_backend, "MPI %d.%d", MPI_VERSION, MPI_SUBVERSION);
#endif
    return g_backend;
}

const char *kd_dist_library(void) {
    static char lib[MPI_MAX_LIBRARY_VERSION_STRING];
    int len = 0;
    if (MPI_Get_library_version(lib, &len) != MPI_SUCCESS) return "MPI (version unknown)";
    /* Open MPI's string goes on with the package, the repository and the date after a comma. */
    lib[strcspn(lib, ",\n")] = '\0';
    return lib;
}

/* Element-wise sum in place, in pieces of at most CHUNK elements. */
static void sum_in_place(void *v, size_t n, MPI_Datatype type, size_t elem) {
    double t0 = kd_now();
    for (size_t o = 0; o < n; o += CHUNK) {
        size_t k = n - o < CHUNK ? n - o : CHUNK;
        MPI_Allreduce(MPI_IN_PLACE, (char *)v + o * elem, (int)k, type, MPI_SUM, MPI_COMM_WORLD);
    }
    g_comm_s += kd_now() - t0;
    g_comm_calls++;
}

void kd_dist_sum(double *v, size_t n) {
    if (g_size > 1) sum_in_place(v, n, MPI_DOUBLE, sizeof *v);
}

int kd_dist_any(int flag) {
    if (g_size == 1) return flag != 0;
    double v = flag != 0;
    sum_in_place(&v, 1, MPI_DOUBLE, sizeof v);
    return v > 0;
}

void kd_dist_bcast(void *buf, size_t bytes, int root) {
    if (g_size == 1) return;
    double t0 = kd_now();
    for (size_t o = 0; o < bytes; o += CHUNK) {
        size_t k = bytes - o < CHUNK ? bytes - o : CHUNK;
        MPI_Bcast((char *)buf + o, (int)k, MPI_BYTE, root, MPI_COMM_WORLD);
    }
    g_comm_s += kd_now() - t0;
    g_comm_calls++;
}

int kd_dist_same(uint64_t v, uint64_t *lo, uint64_t *hi) {
    *lo = *hi = v;
    if (g_size == 1) return 1;
    /* One MAX reduction gives both ends: max(~v) = ~min(v). */
    uint64_t w[2] = {v, ~v};
    double t0 = kd_now();
    MPI_Allreduce(MPI_IN_PLACE, w, 2, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    g_comm_s += kd_now() - t0;
    g_comm_calls++;
    *hi = w[0];
    *lo = ~w[1];
    return *lo == *hi;
}

static void sum_floats(float *v, size_t n) {
    if (g_size > 1) sum_in_place(v, n, MPI_FLOAT, sizeof *v);
}

#else /* one rank, no MPI */

kd_status kd_dist_init(kd_err *err) {
    (void)err;
    return KD_OK;
}
void kd_dist_finalize(void) {}
_Noreturn void kd_dist_abort(int code) { exit(code); }
const char *kd_dist_backend(void) { return "none"; }
const char *kd_dist_library(void) { return NULL; }
void kd_dist_sum(double *v, size_t n) {
    (void)v;
    (void)n;
}
int kd_dist_any(int flag) { return flag != 0; }
void kd_dist_bcast(void *buf, size_t bytes, int root) {
    (void)buf;
    (void)bytes;
    (void)root;
}
int kd_dist_same(uint64_t v, uint64_t *lo, uint64_t *hi) {
    *lo = *hi = v;
    return 1;
}
static void sum_floats(float *v, size_t n) {
    (void)v;
    (void)n;
}

#endif

void kd_dist_pack_reduce(kd_dist_pack *p, const float *grads, double *extra) {
    float *b = p->buf;
    memcpy(b, grads, p->n_grads * sizeof *b);
    for (size_t i = 0; i < p->n_extra; i++) b[p->n_grads + i] = (float)extra[i];
    sum_floats(b, p->n_grads + p->n_extra);
    for (size_t i = 0; i < p->n_extra; i++) extra[i] = b[p->n_grads + i];
}
