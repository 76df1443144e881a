/* train_impl.h - private to src/train: the run's state shared by its setup (setup.c) and its
 * loop (trainer.c), and the run folder (runfolder.c): paths, config.json, metrics.jsonl,
 * checkpoints with their "run" metadata and the one read that resumes a run. */
#ifndef KD_TRAIN_IMPL_H
#define KD_TRAIN_IMPL_H

#include "kd_checkpoint.h"
#include "kd_config.h"
#include "kd_cache.h"
#include "kd_train.h"

/* Room for a file hash (kd_file_hash: "crc32:X adler32:X size:N"). */
#define KD_LOGITS_HASH_MAX 160

/* ---- The run folder (runfolder.c) ---- */
typedef struct {
    char out_dir[KD_PATH_MAX];
    char last_path[KD_PATH_MAX], best_path[KD_PATH_MAX], metrics_path[KD_PATH_MAX];
    char *metrics;                     /* metrics.jsonl contents so far */
    size_t metrics_len, metrics_cap;
    /* Recorded in every checkpoint (borrowed): */
    char **class_names;
    size_t n_class_names;
    const kd_preprocess *pp;
    const char *logits_hash;           /* teacher.logits' file hash, or NULL */
    /* Temporaries of killed writes found and removed by kd_runfolder_create. */
    size_t n_stale;
    char first_stale[256];
} kd_runfolder;

/* Sets the paths under out_dir (KD_EUSAGE when too long); creates nothing. */
kd_status kd_runfolder_init(kd_runfolder *rf, const char *out_dir, kd_err *err);
void kd_runfolder_free(kd_runfolder *rf);
/* Removes the temporaries ("last.safetensors.tmp.<pid>", ...) that writes killed mid-way left
 * in dir: those whose process no longer exists. Returns how many; first gets the first name. */
size_t kd_runfolder_remove_stale(const char *dir, char *first, size_t cap);
/* mkdir -p the folder, remove stale temporaries (n_stale, first_stale) and write the resolved
 * config as config.json. */
kd_status kd_runfolder_create(kd_runfolder *rf, const kd_config *cfg, kd_err *err);
/* On resume: keeps the lines of metrics.jsonl for epochs <= done (a crash may have left a line
 * for an epoch whose checkpoint was never written). A missing file is fine. */
kd_status kd_runfolder_reload_metrics(kd_runfolder *rf, size_t done, kd_err *err);
/* Appends an epoch's line and rewrites metrics.jsonl atomically. */
kd_status kd_runfolder_add_metrics(kd_runfolder *rf, const kd_epoch_metrics *em, kd_err *err);
/* Saves m to path with the run's classes and preprocessing and the "run" metadata (epoch,
 * step, val_acc, the teacher.logits hash and, mid-epoch, the partial sums); ts non-NULL makes
 * it resumable. */
kd_status kd_runfolder_save(const kd_runfolder *rf, const char *path, const kd_model *m,
                            const kd_train_state *ts, size_t epoch, uint64_t step,
                            double val_acc, const kd_epoch_sums *partial, kd_err *err);

/* ---- Runs are never written over (runguard.c) ---- */
typedef struct {
    size_t epoch, batch_in_epoch;  /* last.safetensors' position */
    size_t total;                  /* train.epochs of the folder's config.json (0: unknown) */
    int has_last;                  /* a last.safetensors with a training position */
    int finished;                  /* at the end of all its epochs */
} kd_run_state;
/* Whether dir holds a run's results (last/best checkpoint or metrics.jsonl). */
int kd_runfolder_holds_run(const char *dir);
/* What the run in dir reached; KD_EINPUT when its last.safetensors does not read. */
kd_status kd_runfolder_state(const char *dir, kd_run_state *s, kd_err *err);
/* Before a fresh (not resumed) run writes into dir: OK when it holds no run; else KD_EUSAGE
 * offering --resume / --out / --overwrite, or with overwrite, moves dir to the first free
 * DIR.N (N from 1) and puts that name in moved. */
kd_status kd_runfolder_claim(const char *dir, int overwrite, char *moved, size_t cap,
                             kd_err *err);

/* The "run" metadata JSON (malloc'd; NULL when out of memory); logits_hash (NULL: none) is
 * the hash of the teacher.logits file the run trains from, kept so a resume can refuse a
 * changed file. */
char *kd_run_meta_json(size_t epoch, uint64_t step, double val_acc,
                       const kd_epoch_sums *partial, const char *logits_hash);
/* The partial sums of a "run" metadata string (NULL = absent). Every field must be there, a
 * finite number >= 0: else KD_EINPUT "resume PATH: metadata run.partial.FIELD: ...". The loss
 * terms are left out (out->n_terms 0, keys and term NULL): kd_run_meta_terms reads them. */
kd_status kd_run_meta_partial(const char *path, const char *run_json, kd_epoch_sums *out,
                              kd_err *err);
/* The loss terms' partial sums of a "run" metadata string into sums->term, by sums->keys: each a
 * finite number or null (NaN). A string without run.partial.terms (written before they were
 * kept) gives NaN for every term; a key it lacks is KD_EINPUT naming it. */
kd_status kd_run_meta_terms(const char *path, const char *run_json, kd_epoch_sums *sums,
                            kd_err *err);

/* Where a checkpoint puts a resumed run. */
typedef struct {
    kd_model model;          /* built with gradients, reserved for the batch size */
    kd_train_state ts;       /* ts.order malloc'd */
    kd_epoch_sums partial;   /* the interrupted epoch's sums (zero at an epoch boundary), its
                                loss terms not yet read (kd_run_meta_terms on run) */
    char *run;               /* the checkpoint's "run" metadata (malloc'd, may be NULL) */
    char logits_hash[KD_LOGITS_HASH_MAX];  /* the teacher.logits hash recorded ("": none) */
} kd_resume;

/* The one read of a resume checkpoint (kd_ckpt_load_resume) for a model of arch_json, then
 * its checks against this run: the order has n_train entries below n_data, the batch lies
 * inside an epoch of n_batches, and a mid-epoch file has its partial sums. Errors are
 * KD_EINPUT naming the file ("resume PATH: ..."). kd_resume_free after success. */
kd_status kd_resume_load(const char *path, const char *arch_json, size_t batch, size_t n_train,
                         size_t n_data, size_t n_batches, kd_resume *r, kd_err *err);
void kd_resume_free(kd_resume *r);

/* ---- The run (setup.c, trainer.c) ---- */
/* Everything one run holds; zero-initialised, released in one place (kd_run_free). */
typedef struct {
    const kd_config *cfg;
    const kd_train_opts *opts;
    kd_train_result *res;

    kd_dataset *train_ds, *val_ds, *test_ds;  /* val_ds may alias train_ds */
    size_t *train_idx, n_train;
    size_t *val_idx, n_val;                    /* val_idx NULL: all of val_ds */
    size_t n_test;
    int labels_available;                      /* training labels exist and may be used */
    const kd_preprocess *pp;

    kd_model model;
    kd_model teachers[KD_MAX_TEACHERS];        /* the online teachers (n_teachers; 0 with a cache) */
    size_t n_teachers;
    kd_cache *cache;                           /* teacher.cache, open, or teacher.logits as a
                                                  cache in memory (NULL: online teachers) */
    char logits_hash[KD_LOGITS_HASH_MAX];      /* teacher.logits' file hash ("": none) */
    kd_teacher_set tset;                       /* what the step gets its teacher logits from */
    char **class_names;                        /* recorded in checkpoints (n_class_names) */
    size_t n_class_names;
    int has_teacher;
    size_t C;                                  /* classes (model outputs) */
    size_t *order;                             /* (n_train) this epoch's order */
    kd_rng rng;
    kd_sched_cfg sched;
    size_t B, n_batches;
    kd_trainer trainer;                        /* the step and its buffers */
    kd_runfolder rf;
    const char *last_good;                     /* checkpoint a numeric failure leaves behind */

    /* Where the run starts (a resume moves it) and how far it got. */
    size_t start_epoch, start_batch;
    uint64_t start_step;
    double best_val;                           /* -1 until a validation accuracy exists */
    kd_epoch_sums resumed;                     /* the interrupted epoch's sums */
    char *resume_run;                          /* the resume checkpoint's "run" metadata
                                                  (malloc'd): its loss terms' sums */
    double *term_sums;                         /* (2 * plan terms) the epoch's loss terms'
                                                  sums, then the resumed epoch's */
    double total_train_s, total_samples;
} kd_run;

/* Sends an event / a formatted message event to the caller's progress callback. */
void kd_run_emit(kd_run *t, kd_train_event *ev);
void kd_run_emit_msg(kd_run *t, kd_train_event_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Opens the training, validation and test data and the split (setup.c). */
kd_status kd_run_open_data(kd_run *t, kd_err *err);
/* Builds and initialises the model from the config, reserved for the batch size. */
kd_status kd_run_build_model(kd_run *t, kd_err *err);
/* The teachers of the config: their checkpoints loaded and checked against the data and the
 * model, or, with teacher.cache, the cache opened and checked against the config (built first
 * from the checkpoints when the file does not exist), or teacher.logits read and checked whole
 * into a cache in memory (t->cache, t->logits_hash). Sets t->tset. */
kd_status kd_run_build_teachers(kd_run *t, kd_err *err);
/* Loads the config's online teachers (t->teachers, t->n_teachers) and sets t->tset to them. */
kd_status kd_run_load_teachers(kd_run *t, kd_err *err);
/* Writes the cache the config describes to path from the online teachers (logits.c). */
kd_status kd_run_write_cache(kd_run *t, const char *path, kd_err *err);
/* The config's cache at path, opened and checked against the config (t->cache, t->tset). */
kd_status kd_run_open_cache(kd_run *t, const char *path, kd_err *err);
void kd_run_free(kd_run *t);

#endif
