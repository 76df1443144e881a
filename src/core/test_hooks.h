/* test_hooks.h - fault injection for tests only (not API): included by the code that honours
 * a hook and by the tests that set it. Each hook is a countdown: 0 is off; N > 0 makes the Nth
 * following check fail once, then the hook is 0 again. */
#ifndef KD_TEST_HOOKS_H
#define KD_TEST_HOOKS_H

/* kd_write_atomic: the write fails after the callback, as if the disk were full (ENOSPC). */
extern int kd_fault_write_after;
/* kd_write_atomic: the fsync of the directory after the rename fails (EIO). */
extern int kd_fault_dirsync_after;
/* kd_write_atomic: the fsync of the temporary file fails (EIO), as a failing disk does. */
extern int kd_fault_fsync_after;
/* kd_write_atomic: creating the temporary file fails with EACCES (a folder we may not write;
 * root ignores permissions, so a test run as root cannot get this from chmod). */
extern int kd_fault_create_after;

#endif
