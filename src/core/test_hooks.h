/* test_hooks.h - fault injection and path counters for tests only (not API): included by the
 * code that honours a hook and by the tests that set it. Each fault hook is a countdown: 0 is
 * off; N > 0 makes the Nth following check fail once, then the hook is 0 again. */
#ifndef KD_TEST_HOOKS_H
#define KD_TEST_HOOKS_H

#include <stddef.h>

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
/* kd_sgemm, kd_sgemm_serial: when set, called with every product's transposes and sizes before
 * it runs (serial: 1 from kd_sgemm_serial, one thread's share of a parallel loop, possibly on
 * several threads at once), so a benchmark can record the products of a step and time them
 * alone (bench_cnn.c). */
extern void (*kd_hook_gemm_shape)(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                                  int serial);

#endif
