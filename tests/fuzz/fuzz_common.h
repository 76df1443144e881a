/* fuzz_common.h - what every libFuzzer target shares: the input as a file the readers can open
 * (one memfd per process, rewritten for each input, so no disk I/O and no temp files left
 * behind), and an oracle check that aborts (a crash libFuzzer records) when a reader breaks its
 * own contract: a status outside the README's table, a failure without a message, or a bad-input
 * message that does not name the file. */
#ifndef KD_FUZZ_COMMON_H
#define KD_FUZZ_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kd_common.h"

#define FUZZ_CHECK(cond)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "fuzz oracle failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__); \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* The input's bytes as a readable file: returns its path ("/proc/self/fd/N"). */
static inline const char *fuzz_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("kd-fuzz-input", 0);
        FUZZ_CHECK(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0);
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        FUZZ_CHECK(w > 0);
        done += (size_t)w;
    }
    return path;
}

/* The same for a second file (an IDX labels file next to its images). */
static inline const char *fuzz_file2(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("kd-fuzz-input2", 0);
        FUZZ_CHECK(fd >= 0);
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0);
    if (size) FUZZ_CHECK(pwrite(fd, data, size, 0) == (ssize_t)size);
    return path;
}

/* A reader's result obeys the error contract (kd_common.h, README "Exit codes"). A reader of
 * user files may fail with bad input (naming the file), a usage error, or I/O (out of memory);
 * never with a numeric failure, and never silently. */
static inline void fuzz_check_status(kd_status st, const kd_err *err, const char *path) {
    FUZZ_CHECK(st == KD_OK || st == KD_EIO || st == KD_EUSAGE || st == KD_EINPUT);
    if (st == KD_OK) return;
    FUZZ_CHECK(err->code == st);
    FUZZ_CHECK(err->msg[0] != '\0');
    FUZZ_CHECK(memchr(err->msg, '\0', sizeof err->msg) != NULL);
    if (st == KD_EINPUT && path) FUZZ_CHECK(strstr(err->msg, path) != NULL);
}

#endif
