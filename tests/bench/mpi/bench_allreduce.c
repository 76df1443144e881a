/* bench_allreduce.c - the data-parallel step's packed allreduce (kd_dist_pack_reduce: copy in,
 * MPI_Allreduce, extras out) and its unpack, timed on the gradient sizes of the Fashion-MNIST
 * MLPs: the 800x2 student (1,276,810 floats) and the 1200x2 teacher trained alone (2,395,210).
 * Built by `make mpi` (MPI=1 only). Run under mpirun; rank 0 prints the median of REPS calls.
 *   mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 \
 *       build-mpi/bench/mpi_bench_allreduce [REPS] [FLOATS...] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd_dist.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    kd_err err;
    if (kd_dist_init(&err) != KD_OK) {
        fprintf(stderr, "bench_allreduce: %s\n", err.msg);
        return 1;
    }
    int reps = argc > 1 ? atoi(argv[1]) : 50;
    if (reps < 1) reps = 1;
    size_t defaults[] = {1276810, 2395210}, *sizes = defaults, n_sizes = 2;
    size_t *given = NULL;
    if (argc > 2) {
        n_sizes = (size_t)argc - 2;
        given = malloc(n_sizes * sizeof *given);
        for (size_t i = 0; i < n_sizes; i++) given[i] = strtoull(argv[2 + i], NULL, 10);
        sizes = given;
    }
    const int K = kd_dist_size(), rank = kd_dist_rank();
    double *t_red = malloc((size_t)reps * sizeof *t_red), *t_unp = malloc((size_t)reps * sizeof *t_unp);
    if (rank == 0)
        printf("ranks %d (%s), %d calls each; median times\n", K, kd_dist_backend(), reps);
    for (size_t s = 0; s < n_sizes; s++) {
        kd_dist_pack p;
        float *g = kd_alloc_floats(sizes[s]);
        if (!g || kd_dist_pack_init(&p, sizes[s], 10, &err) != KD_OK) {
            fprintf(stderr, "bench_allreduce: out of memory\n");
            kd_dist_abort(1);
        }
        for (size_t i = 0; i < sizes[s]; i++) g[i] = (float)(i % 1000) * 1e-3f;
        double extra[10] = {0};
        for (int r = -3; r < reps; r++) {  /* 3 warm-up calls */
            double t0 = kd_now();
            kd_dist_pack_reduce(&p, g, extra);
            double t1 = kd_now();
            kd_dist_pack_unpack(&p, g, 1.0f / (float)K);
            double t2 = kd_now();
            if (r >= 0) {
                t_red[r] = t1 - t0;
                t_unp[r] = t2 - t1;
            }
        }
        qsort(t_red, (size_t)reps, sizeof *t_red, cmp_double);
        qsort(t_unp, (size_t)reps, sizeof *t_unp, cmp_double);
        const double mb = (double)sizes[s] * 4.0 / 1e6, red = t_red[reps / 2];
        /* A ring allreduce moves 2 (K - 1) / K of the buffer through each rank ("bus
         * bandwidth", as nccl-tests reports it). */
        if (rank == 0)
            printf("%zu floats (%.1f MB): pack + allreduce %.3f ms (%.2f GB/s bus), unpack %.3f ms\n",
                   sizes[s], mb, 1e3 * red, K > 1 ? 2.0 * (K - 1) / K * mb / 1e3 / red : 0.0,
                   1e3 * t_unp[reps / 2]);
        kd_dist_pack_free(&p);
        kd_free_aligned(g);
    }
    free(t_red);
    free(t_unp);
    free(given);
    kd_dist_finalize();
    return 0;
}
