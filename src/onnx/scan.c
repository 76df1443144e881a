/* scan.c - the wire-format check an ONNX file passes before protobuf-c unpacks it: protobuf-c
 * recurses without a limit (a graph nests inside an attribute, a type inside a type) and turns
 * a few input bytes into a struct or an 8-byte integer each, so depth and counts are capped
 * here, walking the generated descriptors exactly as the unpacker will. */
#include <protobuf-c/protobuf-c.h>

#include "onnx.pb-c.h"
#include "onnx_impl.h"

const kd_onnx_caps kd_onnx_default_caps = {
    .max_bytes = (size_t)1 << 30,
    .max_depth = 32,
    .max_messages = (size_t)1 << 22,
    .max_nodes = (size_t)1 << 16,
    .max_varints = (size_t)1 << 24,
    .max_tensor_elems = (size_t)1 << 28,
};

typedef struct {
    const uint8_t *base;
    const kd_onnx_caps *caps;
    size_t messages, nodes, varints;
    kd_err *err;
} scan_ctx;

/* A varint at *p (< end): 0 and *p past it, or -1 when truncated or longer than 10 bytes. */
static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    uint64_t r = 0;
    for (int i = 0; i < 10; i++) {
        if (*p >= end) return -1;
        const uint8_t b = *(*p)++;
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

static int is_varint_type(ProtobufCType t) {
    return t == PROTOBUF_C_TYPE_INT32 || t == PROTOBUF_C_TYPE_SINT32 ||
           t == PROTOBUF_C_TYPE_INT64 || t == PROTOBUF_C_TYPE_SINT64 ||
           t == PROTOBUF_C_TYPE_UINT32 || t == PROTOBUF_C_TYPE_UINT64 ||
           t == PROTOBUF_C_TYPE_BOOL || t == PROTOBUF_C_TYPE_ENUM;
}

static kd_status bad(scan_ctx *s, const uint8_t *at, const char *what) {
    return kd_err_set(s->err, KD_EINPUT, "not a valid ONNX file: %s at byte %zu", what,
                      (size_t)(at - s->base));
}

/* The elements a field of type t adds to the unpacked message: one per occurrence, or one per
 * varint of a packed run (its bytes without the continuation bit). */
static kd_status count_field(scan_ctx *s, const ProtobufCFieldDescriptor *f, const uint8_t *p,
                             size_t n, int packed) {
    if (f->label != PROTOBUF_C_LABEL_REPEATED || !is_varint_type(f->type)) return KD_OK;
    size_t k = 1;
    if (packed) {
        k = 0;
        for (size_t i = 0; i < n; i++) k += !(p[i] & 0x80);
    }
    s->varints += k;
    if (s->varints > s->caps->max_varints)
        return kd_err_set(s->err, KD_EINPUT, "ONNX file: more than %zu integers in repeated "
                          "fields (byte %zu)", s->caps->max_varints, (size_t)(p - s->base));
    return KD_OK;
}

static kd_status scan_message(scan_ctx *s, const ProtobufCMessageDescriptor *d, const uint8_t *p,
                              const uint8_t *end, size_t depth) {
    if (depth > s->caps->max_depth)
        return kd_err_set(s->err, KD_EINPUT, "ONNX file: messages nested more than %zu deep "
                          "(a %s at byte %zu)", s->caps->max_depth, d->short_name,
                          (size_t)(p - s->base));
    if (++s->messages > s->caps->max_messages)
        return kd_err_set(s->err, KD_EINPUT, "ONNX file: more than %zu messages (byte %zu)",
                          s->caps->max_messages, (size_t)(p - s->base));
    if (d == &onnx__node_proto__descriptor && ++s->nodes > s->caps->max_nodes)
        return kd_err_set(s->err, KD_EINPUT, "ONNX file: more than %zu nodes (byte %zu)",
                          s->caps->max_nodes, (size_t)(p - s->base));
    while (p < end) {
        const uint8_t *at = p;
        uint64_t tag, v;
        if (read_varint(&p, end, &tag)) return bad(s, at, "a truncated field tag");
        const uint64_t num = tag >> 3;
        const unsigned wt = (unsigned)(tag & 7);
        if (num == 0 || num > 0x1fffffff) return bad(s, at, "field number 0 or too large");
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)num);
        kd_status st = KD_OK;
        switch (wt) {
        case 0:
            if (read_varint(&p, end, &v)) return bad(s, at, "a truncated varint");
            if (f) st = count_field(s, f, at, 0, 0);
            break;
        case 1:
        case 5: {
            const size_t w = wt == 1 ? 8 : 4;
            if ((size_t)(end - p) < w) return bad(s, at, "a truncated fixed-size field");
            p += w;
            if (f) st = count_field(s, f, at, 0, 0);
            break;
        }
        case 2:
            if (read_varint(&p, end, &v)) return bad(s, at, "a truncated length");
            if (v > (uint64_t)(end - p)) return bad(s, at, "a length past the end of its message");
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE)
                st = scan_message(s, f->descriptor, p, p + v, depth + 1);
            else if (f)
                st = count_field(s, f, p, (size_t)v, 1);
            p += v;
            break;
        default:  /* groups (3, 4) do not occur in ONNX; 6 and 7 are not wire types */
            return bad(s, at, "an unsupported wire type");
        }
        if (st) return st;
    }
    return KD_OK;
}

kd_status kd_onnx_scan(const uint8_t *buf, size_t len, const kd_onnx_caps *caps, kd_err *err) {
    if (len > caps->max_bytes)
        return kd_err_set(err, KD_EINPUT, "ONNX file of %zu bytes, more than the %zu-byte limit",
                          len, caps->max_bytes);
    if (len == 0) return kd_err_set(err, KD_EINPUT, "not a valid ONNX file: it is empty");
    scan_ctx s = {buf, caps, 0, 0, 0, err};
    return scan_message(&s, &onnx__model_proto__descriptor, buf, buf + len, 1);
}
