/* kd_dist.h - the ranks of a data-parallel job and the few collectives training needs (one
 * packed sum per step, small sums, a broadcast, a checksum compare), plus how a global batch is
 * cut into shards. `make MPI=1` builds it on Open MPI (src/dist/dist.c is the only file that
 * includes <mpi.h>); the default build has the same API with one rank, where every collective
 * leaves its data as it is. Communication failures end the job (MPI's default handler,
 * MPI_ERRORS_ARE_FATAL: mpirun then stops every rank), so the collectives return nothing. */
#ifndef KD_DIST_H
#define KD_DIST_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"

/* Joins the job when the process was started by mpirun (MPI_Init_thread, MPI_THREAD_FUNNELED:
 * only the main thread communicates, OpenMP and the loader thread never do). A process that
 * mpirun did not start, and every process of the default build, is rank 0 of 1 and never
 * touches MPI. Idempotent. KD_EIO when MPI cannot start. */
kd_status kd_dist_init(kd_err *err);
/* Leaves the job (MPI_Finalize) once every rank finished; a no-op without MPI. */
void kd_dist_finalize(void);
/* Ends the whole job now with exit code `code`: MPI_Abort (mpirun stops every other rank and
 * exits with `code`); without MPI, exit(code). For a failure the other ranks cannot know of. */
_Noreturn void kd_dist_abort(int code);

int kd_dist_rank(void);
int kd_dist_size(void);
/* "Open MPI x.y.z" in the MPI build, "none" in the default one. */
const char *kd_dist_backend(void);
/* The MPI library loaded at run time ("Open MPI v4.1.4", from MPI_Get_library_version, which
 * needs no MPI_Init) in the MPI build; NULL in the default one. For `distill --version`. */
const char *kd_dist_library(void);

/* Rows [*lo, *hi) of a batch of n rows that rank `rank` of `size` takes: contiguous shards in
 * rank order, the first n % size of them one row longer (so sizes differ by at most one and a
 * rank past n gets an empty shard). */
void kd_dist_shard(size_t n, size_t rank, size_t size, size_t *lo, size_t *hi);

/* v[0..n) <- the element-wise sum over the ranks, the same bits on every rank. */
void kd_dist_sum(double *v, size_t n);
/* 1 on every rank when any rank passed nonzero. */
int kd_dist_any(int flag);
/* buf[0..bytes) <- rank root's. */
void kd_dist_bcast(void *buf, size_t bytes, int root);
/* 1 when every rank passed the same v; else 0, with the smallest and largest in lo and hi. */
int kd_dist_same(uint64_t v, uint64_t *lo, uint64_t *hi);

/* A 64-bit checksum of bytes, continuing h (start from KD_DIST_HASH_INIT): FNV-1a over 64-bit
 * words (the tail byte by byte). For comparing ranks' state, not for security. */
#define KD_DIST_HASH_INIT 0xcbf29ce484222325ull
uint64_t kd_dist_hash(uint64_t h, const void *data, size_t bytes);

/* Seconds this rank spent in collectives since kd_dist_init (waiting for slower ranks
 * included), and how many it made. */
double kd_dist_comm_seconds(void);
uint64_t kd_dist_comm_calls(void);

/* The training step's one allreduce: a float buffer of n_grads gradients followed by n_extra
 * values (counts, loss sums, flags), summed over the ranks by one MPI_Allreduce. */
typedef struct {
    float *buf;  /* (n_grads + n_extra) */
    size_t n_grads, n_extra;
} kd_dist_pack;

/* KD_EIO when out of memory; kd_dist_pack_free is safe after a failure. */
kd_status kd_dist_pack_init(kd_dist_pack *p, size_t n_grads, size_t n_extra, kd_err *err);
void kd_dist_pack_free(kd_dist_pack *p);  /* NULL-safe, idempotent */
/* buf <- the sum over the ranks of [grads (n_grads), extra (n_extra)]; extra gets its sums back.
 * The extra values travel as floats: counts are exact below 2^24, loss sums keep 7 digits. */
void kd_dist_pack_reduce(kd_dist_pack *p, const float *grads, double *extra);
/* grads[i] = buf[i] * scale (scale 1: a copy). */
void kd_dist_pack_unpack(const kd_dist_pack *p, float *grads, float scale);

#endif
