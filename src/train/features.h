/* features.h - private to src/train: the trainer's feature losses (features.c). */
#ifndef KD_TRAIN_FEATURES_H
#define KD_TRAIN_FEATURES_H

#include "kd_train.h"

/* For each hint / at entry of t->plan: observes the student value in the model and the
 * teacher's in the entry's member (both models reserved again), checks their shapes
 * (kd_loss_feature_shapes), and for hint adds the adapter "adapters.<entry>.weight" (Ct, Cs)
 * ((Ct, Cs, 1, 1) for [C, H, W] values) and ".bias" (Ct) to the model's parameters, initialised
 * as the model's layers are (s.init) from a copy of s.rng. KD_EUSAGE naming the entry's field
 * ("distill.losses[1].student: ...") for an unknown value, shapes that do not fit, a member out
 * of range or teachers that are not run online. */
kd_status kd_features_init(kd_trainer *t, kd_err *err);
/* Points the entries' inputs at this step's values (after both forwards), their gradients
 * times gscale. */
void kd_features_bind(kd_trainer *t, double gscale);
void kd_features_free(kd_trainer *t);

#endif
