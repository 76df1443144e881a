/* kd_filekind.h - names a file given where a checkpoint was expected by its first bytes (ONNX,
 * a PyTorch zip or pickle, HDF5, NumPy, gzip, an image, CSV or other text), with what to do. */
#ifndef KD_FILEKIND_H
#define KD_FILEKIND_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    const char *what;  /* "an ONNX model", ...; NULL when the bytes are not recognised */
    const char *hint;  /* what to do instead (a full sentence) */
} kd_file_kind;

/* How many first bytes kd_file_sniff looks at (at most). */
#define KD_SNIFF_BYTES 512

/* From the first n bytes of a file. Never says a safetensors file is anything else: callers
 * ask only about a file whose header already failed to read as safetensors. */
kd_file_kind kd_file_sniff(const uint8_t *head, size_t n);
/* The same from the file at path (what = NULL when unreadable or unrecognised). */
kd_file_kind kd_file_sniff_path(const char *path);

#endif
