/* kd_onnx.h - ONNX teachers: reads an .onnx file (protobuf-c code generated from Debian's
 * onnx.proto, after a scan of the wire format against caps) and translates its graph onto a
 * distill model (kd_nn.h) in evaluation mode, operator by operator; anything else is refused by
 * name before any training starts.
 *
 * Names: every translated layer is named after its ONNX node's output by one mapping
 * (kd_onnx_name): a leading '/' dropped, every character outside letters, digits, '_' and '.'
 * turned into '_' (so is a '.' that would leave an empty component), a '_' put in front of a
 * name that would start with a number, be "input" or start with a prefix distill keeps (optim,
 * train, adapters), shortened to KD_LAYER_NAME_MAX characters, and "_2", "_3", ... added where
 * two collide. */
#ifndef KD_ONNX_H
#define KD_ONNX_H

#include <stddef.h>
#include <stdint.h>
#include "kd_common.h"
#include "kd_nn.h"

/* Caps on what a file may make the reader do, each checked before the memory it would cost is
 * taken: the wire-format scan checks bytes, nesting depth, messages and nodes before protobuf-c
 * unpacks (protobuf-c has no recursion limit, and a graph can nest in an attribute); the
 * translation checks every tensor's element count before reading its data. */
typedef struct {
    size_t max_bytes;         /* the file */
    size_t max_depth;         /* message nesting (ModelProto is 1) */
    size_t max_messages;      /* messages of any kind, each costing a struct when unpacked */
    size_t max_nodes;         /* NodeProto messages */
    size_t max_varints;       /* elements of repeated integer fields (8 bytes each unpacked) */
    size_t max_tensor_elems;  /* elements of one tensor */
} kd_onnx_caps;

/* The defaults: 1 GiB, depth 32, 2^22 messages, 2^16 nodes, 2^24 integers, 2^28 elements. */
extern const kd_onnx_caps kd_onnx_default_caps;

/* Checks buf[0..len) as the wire format of an ONNX ModelProto against caps: well-formed
 * tags, varints and lengths, no field nested past max_depth, the counts within their caps.
 * KD_EINPUT naming the byte offset and the cap exceeded. */
kd_status kd_onnx_scan(const uint8_t *buf, size_t len, const kd_onnx_caps *caps, kd_err *err);

/* The distill name of an ONNX value name (see the top of this file), without the collision
 * suffix: out holds at most KD_LAYER_NAME_MAX characters plus the NUL. */
void kd_onnx_name(const char *onnx, char *out, size_t cap);

/* One value of a translated graph, for `distill info`. */
typedef struct {
    char *onnx;      /* the ONNX name */
    char *distill;   /* the layer name it reads as ("input" for the graph's input), or NULL for
                      * a constant (initializer, Constant, folded shape arithmetic) */
    kd_shape shape;  /* per sample for a computed value; the whole tensor for a constant */
} kd_onnx_value;

/* What a load found, beside the model. */
typedef struct {
    int from_distill;        /* written by `distill export` (producer "distill" with its
                              * metadata): takes the raw sample, preprocessing inside */
    int64_t opset;
    int64_t ir_version;
    char producer[64];
    char input[256];         /* the graph input's ONNX name */
    char output[256];        /* the output used (teacher.output, "logits" or the only one) */
    char note[512];          /* what the run should say ("final Softmax removed: ..."), or "" */
    char ops[1024];          /* operators of the graph with counts: "Conv x20, Relu x17" */
    size_t n_inputs, n_outputs;
    char **outputs;          /* (n_outputs) every graph output's name */
    size_t n_values;
    kd_onnx_value *values;   /* in definition order */
} kd_onnx_info;
void kd_onnx_info_free(kd_onnx_info *info);  /* NULL-safe; leaves it zeroed */

typedef struct {
    const char *output;          /* the output to use (teacher.output), or NULL */
    int with_grads;              /* 0: an inference-only model (a teacher) */
    const kd_onnx_caps *caps;    /* NULL: kd_onnx_default_caps */
    /* in_c > 0: the model gets a first affine layer "input.preprocess" computing the graph's
     * input from the data as x * in_w[c] + in_b[c] per channel (a teacher fed other
     * preprocessing than the data's); in_c must be the input's channel count. */
    size_t in_c;
    const float *in_w, *in_b;
} kd_onnx_opts;

/* Loads the ONNX model at path into m (weights copied in; m is freed and zeroed on failure)
 * and, when info is not NULL, describes it. Tensors with external data are read only from
 * files inside path's own folder. Errors: KD_EINPUT naming the file and the node (its name and
 * op type, with the supported list), tensor or value at fault; KD_EIO when unreadable. */
kd_status kd_onnx_load(const char *path, const kd_onnx_opts *opt, kd_model *m,
                       kd_onnx_info *info, kd_err *err);
/* The same from bytes in memory; dir is the folder external data must come from (NULL: no
 * external data allowed). Messages do not name a file (the caller prefixes it). */
kd_status kd_onnx_load_buf(const uint8_t *buf, size_t len, const char *dir,
                           const kd_onnx_opts *opt, kd_model *m, kd_onnx_info *info,
                           kd_err *err);

/* The operators the translation accepts, comma-separated, for messages and docs. */
const char *kd_onnx_supported_ops(void);

#endif
