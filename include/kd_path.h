/* kd_path.h - lexical path helpers: normalising absolute paths, resolving a relative path
 * against a base directory, joining a folder and a file name, splitting a path. None of them
 * touch the file system (callers that need symlinks followed use realpath first). */
#ifndef KD_PATH_H
#define KD_PATH_H

#include <stddef.h>
#include "kd_common.h"

/* Normalises an absolute path in place: drops "." and empty components, folds ".." (never
 * above "/"), no trailing slash except for "/" itself. Folding ".." lexically can differ from
 * the kernel only after a symlink; callers accept that for readable paths. The result is never
 * longer than the input. */
void kd_path_clean(char *path);

/* `in` made absolute (relative to `base`, an absolute directory; an absolute `in` is kept) and
 * cleaned, into out (cap bytes). Errors: KD_EIO "out of memory"; KD_EUSAGE "path too long after
 * resolving (N bytes)" when the cleaned path does not fit. */
kd_status kd_path_resolve(char *out, size_t cap, const char *base, const char *in, kd_err *err);

/* "dir/name" into out (cap bytes), one slash between them even when dir ends with one.
 * 0 on success; -1 when it does not fit (out then holds a truncated, NUL-terminated string). */
int kd_path_join(char *out, size_t cap, const char *dir, const char *name);

/* The directory part of path into out: "." for a bare name, "/" for "/name", else everything
 * before the last slash. 0, or -1 when it does not fit in cap bytes. */
int kd_path_dirname(char *out, size_t cap, const char *path);

/* 1 when path ends with suffix (".csv"), ASCII letters compared in any case when fold_case. */
int kd_path_has_suffix(const char *path, const char *suffix, int fold_case);

/* The part after the last slash (path itself when there is none); points into path. */
const char *kd_path_basename(const char *path);

/* A short name for paths[k] among n paths, to label a column or a legend entry: its base name,
 * or "folder/name" when another of the paths has the same base name (runs/teacher/best.safetensors
 * and runs/student/best.safetensors). Points into paths[k]. */
const char *kd_path_label(const char *const *paths, size_t n, size_t k);

#endif
