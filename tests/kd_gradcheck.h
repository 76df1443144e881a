/* kd_gradcheck.h - finite-difference gradient check of a model built from a JSON layer list,
 * and a hyperparameter probe, shared by the layer tests (dense, activations, conv, pools,
 * batchnorm, layernorm). */
#ifndef KD_GRADCHECK_H
#define KD_GRADCHECK_H

#include <stddef.h>
#include <stdint.h>

#include "../src/nn/layer_impl.h"

/* Builds the model from layers_json on a per-sample input shape, fills parameters and a batch
 * of B inputs with seeded random values, and compares the analytic gradient of
 * loss = sum_i r_i * logits_i (r seeded random) with central differences for every parameter
 * tensor and for the input (up to ~64 elements per tensor). Relative error
 * |a - n| / max(|a| + |n|, 1e-3) must be below tol. Kinks (the numeric derivatives at steps h and
 * h/2 disagree by more than tol) are skipped and counted; more than 10% skipped is a failure.
 * training selects the training forward (dropout masks are identical between evaluations).
 * Reports each mismatch through kd_test_fail with tensor name and index; returns the number of
 * failures (0 = pass). */
int kd_gradcheck(const kd_shape *input, const char *layers_json, size_t B, uint64_t seed,
                 int training, double tol);

/* The value of field in the layer's own description (ops->describe, what the arch string
 * records): numbers as doubles, true/false as 1/0; NAN when the layer does not write it (a
 * default). Hyperparameters are private to each layer's file; this is how tests read them. */
double kd_test_layer_field(const kd_layer *l, const char *field);

#endif
