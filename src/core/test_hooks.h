/* test_hooks.h - every test hook of distill, in one place (not API): fault injection, path
 * counters and environment variables that tests set. They exist only in the test build, the
 * objects compiled with -DKD_TEST_HOOKS (the Makefile's $(BUILD)/hooks/: make test, make asan,
 * the benchmarks and fuzz targets); in the release ./distill each hook is a constant (off), so
 * neither a symbol nor a variable name is left in it (tests/test_house.c checks with nm and
 * strings). Each fault hook is a countdown: 0 is off; N > 0 makes the Nth following check fail
 * once, then the hook is 0 again.
 *
 * Every hook is declared on one line "extern TYPE NAME;" or named by a KD_HOOK_ENV_* string,
 * which is how that test finds them: add a new hook here, in the same form. */
#ifndef KD_TEST_HOOKS_H
#define KD_TEST_HOOKS_H

#include <stddef.h>

/* The environment variables honoured by the test build only. */
/* distill train: act as if Ctrl-C came after this many steps (resume tests). */
#define KD_HOOK_ENV_STOP_AFTER_STEPS "KD_TRAIN_STOP_AFTER_STEPS"

#ifdef KD_TEST_HOOKS

/* kd_write_atomic: the write fails after the callback, as if the disk were full (ENOSPC). */
extern int kd_fault_write_after;
/* kd_write_atomic: the fsync of the directory after the rename fails (EIO). */
extern int kd_fault_dirsync_after;
/* kd_write_atomic: the fsync of the temporary file fails (EIO), as a failing disk does. */
extern int kd_fault_fsync_after;
/* kd_write_atomic: creating the temporary file fails with EACCES (a folder we may not write;
 * root ignores permissions, so a test run as root cannot get this from chmod). */
extern int kd_fault_create_after;

/* kd_sgemm: counts the products it ran on one thread while more were configured (the small
 * products rule), so a test can check that two runs took the same path. Not a countdown. */
extern unsigned long kd_hook_gemm_one_thread;
/* kd_sgemm: 0 turns the small-products rule off (tests/bench/bench_gemm.c times both sides). */
extern int kd_gemm_small_rule;
/* kd_sgemm_linear: 0 turns the row split off (the team's sgemm, the reference path). */
extern int kd_gemm_row_split;
/* kd_model_forward: 0 turns inference replicas off (the team runs each layer, the reference
 * path); kd_hook_replica_passes counts the forwards that ran replicas. */
extern int kd_infer_replicas;
/* kd_model_forward: 0 turns the banded one-sample forward off (exec.c); kd_hook_banded_passes
 * counts the forwards that ran banded. */
extern int kd_banded_forward;
/* wg_frozen.c: a frozen 3x3 convolution's one sample by Winograd (0 never, 1 wherever the shape
 * allows, -1 the release rule); kd_hook_wgf_parts counts its calls. */
extern int kd_wg_frozen_on;
extern unsigned long kd_hook_wgf_parts;
extern unsigned long kd_hook_banded_passes;
/* graph.c: 0 leaves an inference model's convolution -> batch norm -> add (-> relu) as two
 * units (the add's own pass), 1 fuses them (KD_UNIT_CONV_ADD). */
extern int kd_fuse_residual;
/* conv2d.c: inference's direct convolution: -1 where it beats sgemm (kd_conv_direct_wins, the
 * release rule), 0 never (im2col and sgemm, as in training), 1 always. */
extern int kd_direct_conv;
/* pool_affine.c: inference's batchnorm -> maxpool 2x2 -> relu 8 windows at a time (1), or the
 * general path's 4 (0). */
extern int kd_pool_affine_fast;
/* conv_direct.c: which kernels run (0 the CPU's widest, 1 AVX-512, 2 AVX2, 3 portable). */
extern int kd_direct_conv_isa;
/* conv2d.c: inference's own product (conv_gemm.h) where the direct convolution does not run:
 * -1 where it beats sgemm (kd_conv_gemm_wins, the release rule), 0 never, 1 always. */
extern int kd_conv_gemm_own;
/* conv_gemm.c: 0 keeps its panels on the AVX2 kernels on an AVX-512 CPU; -1 the CPU's widest. */
extern int kd_conv_gemm_wide;
/* conv2d.c: inference's Winograd F(2x2, 3x3) (winograd.h) for 3x3 stride-1 ungrouped layers:
 * -1 the release rule (enough channels and tiles), 0 never, 1 wherever the shape allows. */
extern int kd_conv_winograd;
/* conv_packed.c: a frozen model's packed convolution: -1 where it fits (kd_conv_packed_fits:
 * an AVX-512 CPU, whole blocks of 64 output channels), 0 never (kd_model_freeze packs nothing). */
extern int kd_conv_packed_on;
/* batchnorm.c: inference folds a batch norm into the convolution before it: -1 for a batch of
 * 4 or more (the release rule), 0 never (the layers' own bits), 1 always. */
extern int kd_bn_fold;
/* winograd.c: 1 runs the transforms' portable loops where vector ones would run, 2 no wider
 * than AVX2 (where AVX-512 would run). */
extern int kd_winograd_portable;
/* dw_blocked.c: 0 keeps every depthwise forward on the plane kernels (the blocks' reference). */
extern int kd_dw_blocked;
extern unsigned long kd_hook_replica_passes;
/* kd_sgemm, kd_sgemm_serial: when set, called with every product's transposes and sizes before
 * it runs (serial: 1 from kd_sgemm_serial, one thread's share of a parallel loop, possibly on
 * several threads at once), so a benchmark can record the products of a step and time them
 * alone (bench_cnn.c). */
extern void (*kd_hook_gemm_shape)(int trans_a, int trans_b, size_t M, size_t N, size_t K, int serial);

/* KD_PAR (kd_threads.h): the work below which our loops stay serial, KD_PAR_MIN unless a test
 * lowers it to 1 to run every parallel path on tiny shapes. */
extern size_t kd_par_min;

/* kd_idx_read: the largest payload buffer (bytes) the last call allocated, so a test can check
 * that a small file claiming a huge payload never made us allocate it. */
extern size_t kd_idx_last_alloc;
/* The data loader: when nonzero, its next pthread_create is treated as failed (as when the
 * system is out of threads), so a test can check that it is an error and not a hang. */
extern int kd_loader_fail_thread_start;

/* A countdown fault hook (common.c): 1 when this check is the one to fail. */
int kd_fault_now(int *hook);
#define KD_FAULT(hook) kd_fault_now(&(hook))
/* A statement that only the test build runs (a counter, a hook call). */
#define KD_HOOK_RUN(stmt) do { stmt; } while (0)
/* A hook's value in the test build; the release build's value is the second argument. */
#define KD_HOOK_VALUE(hook, release_value) (hook)

#else

#define KD_FAULT(hook) 0
#define KD_HOOK_RUN(stmt) do { } while (0)
#define KD_HOOK_VALUE(hook, release_value) (release_value)

#endif
#endif
