/* kd_report.h - pictures of runs as standalone SVG documents: training curves from
 * metrics.jsonl (`distill plot`) and the evaluation report (`distill eval --report`). Functions
 * from numbers to SVG text plus an atomic save; no command-line knowledge. The markup contract
 * that lets a reader recover the numbers is in src/report/report_impl.h. */
#ifndef KD_REPORT_H
#define KD_REPORT_H

#include <stddef.h>

#include "kd_common.h"
#include "kd_eval.h"
#include "kd_strbuf.h"
#include "kd_train.h"

/* ---- Training curves (src/report/curves.c) ---- */

/* One run: its legend name and its metrics.jsonl rows (kd_metrics_read), epochs increasing. */
typedef struct {
    const char *label;
    const kd_epoch_metrics *rows;
    size_t n_rows;
    int teacher_cached;  /* its teacher's logits came from the cache: samples/s leave it out */
} kd_report_run;

/* The metrics a curve can show, by kd_epoch_fields name: index 0 .. kd_report_n_curves()-1.
 * kd_report_curve_name(i) is NULL past the end (so the names form a NULL-terminated list). */
size_t kd_report_n_curves(void);
const char *kd_report_curve_name(size_t i);

/* Appends to svg one chart with a line per run against the epoch: a panel for `metric` (a
 * curve name, or a loss term key such as "loss.dkd.tckd" that some run's rows have), or with metric NULL a 2x2 grid of the cross-entropy with the labels (each run's
 * hard term, comparable across a teacher and its students; the loss when no run has labels),
 * validation accuracy, learning rate and throughput (log scale). The epoch axis ends at the
 * last epoch. Missing values (null in metrics.jsonl) leave gaps. A legend names the runs.
 * KD_EUSAGE for an unknown metric; KD_EINPUT when a value is too large to draw (|v| > 1e100,
 * naming the run, metric and epoch). Check svg->oom (kd_report_save does). */
kd_status kd_report_curves(const kd_report_run *runs, size_t n_runs, const char *metric,
                           kd_strbuf *svg, kd_err *err);

/* ---- The evaluation report (src/report/evalreport.c) ---- */

/* One evaluated model, as `distill eval` measured it. */
typedef struct {
    const char *label;        /* the name shown (eval's column heading) */
    size_t params;
    const kd_metrics *met;    /* top-1 hits over met->n labelled samples, the ECE bins */
    double latency_p50_us, latency_p99_us;
} kd_report_model;

/* Appends to svg the comparison of n models: top-1 accuracy with its Wilson 95% interval,
 * parameters and single-sample latency (p50 bar, p99 whisker) on log scales, one row per model;
 * below, a reliability diagram per model (accuracy per confidence bin against the diagonal,
 * the gap to each bin's mean confidence shaded, the ECE in the title). Without labels the
 * accuracy and calibration panels say so. subtitle: what was evaluated ("test split of ..."). */
kd_status kd_report_eval(const kd_report_model *models, size_t n, const char *subtitle,
                         kd_strbuf *svg, kd_err *err);

/* Writes a finished picture to path atomically (kd_write_atomic: err may hold a warning after
 * success). KD_EIO when the picture ran out of memory while drawing, or the write fails. */
kd_status kd_report_save(const char *path, const kd_strbuf *svg, kd_err *err);

#endif
