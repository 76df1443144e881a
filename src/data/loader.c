/* loader.c - batch loader over a fixed index order: synchronous conversion for fast formats, a
 * background decoding thread with a bounded prefetch queue for formats whose samples are slow
 * to read (kd_format_ops.decodes_per_batch: image folders). Both paths call kd_dataset_get on
 * the same index slices, so they produce identical batches. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../core/test_hooks.h"
#include "data_impl.h"
#include "kd_dist.h"

#define KD_LOADER_QUEUE 3  /* batches in flight: bounds memory whatever the dataset size */

typedef struct {
    float *x;          /* (batch_size, numel) */
    int32_t *y;        /* (batch_size) */
    size_t n;          /* samples delivered */
    size_t n_skipped;  /* samples of the slice left out (skip_bad) */
    int full;          /* produced and not yet released by the consumer */
    kd_status st;
    kd_err err;
} slot;

struct kd_loader {
    kd_dataset *ds;
    size_t *order, n, batch_size, numel, n_batches;
    size_t rank, ranks;       /* data-parallel shard of each batch (kd_loader_open_shard); 0, 1 */
    int threaded;
    slot slots[KD_LOADER_QUEUE];
    size_t n_slots;
    size_t next_batch;        /* consumer: next batch number to hand out */
    int held;                 /* consumer holds slot (next_batch - 1) % n_slots */
    kd_status failed;         /* sticky error */
    kd_err fail_err;
    /* worker */
    pthread_t thread;
    int thread_started;
    int have_mu, have_cv;     /* initialised, so close destroys exactly those */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

#ifdef KD_TEST_HOOKS
int kd_loader_fail_thread_start;
#endif

/* Lock, unlock and wait on a mutex and condition that init succeeded for cannot fail (POSIX
 * lists only misuse errors for them), so a failure is a bug in this file, not a user error. */
static void lock(kd_loader *l) { KD_ASSERT(pthread_mutex_lock(&l->mu) == 0); }
static void unlock(kd_loader *l) { KD_ASSERT(pthread_mutex_unlock(&l->mu) == 0); }
static void wait_cv(kd_loader *l) { KD_ASSERT(pthread_cond_wait(&l->cv, &l->mu) == 0); }
static void wake(kd_loader *l) { KD_ASSERT(pthread_cond_broadcast(&l->cv) == 0); }

static void batch_span(const kd_loader *l, size_t k, size_t *start, size_t *count) {
    *start = k * l->batch_size;
    size_t left = l->n - *start;
    *count = left < l->batch_size ? left : l->batch_size;
    if (l->ranks > 1) {
        size_t lo, hi;
        kd_dist_shard(*count, l->rank, l->ranks, &lo, &hi);
        *start += lo;
        *count = hi - lo;
    }
}

static void *worker_main(void *arg) {
    kd_loader *l = arg;
    for (size_t k = 0; k < l->n_batches; k++) {
        slot *s = &l->slots[k % l->n_slots];
        lock(l);
        while (s->full && !l->stop) wait_cv(l);
        int stop = l->stop;
        unlock(l);
        if (stop) break;
        size_t start, count;
        batch_span(l, k, &start, &count);
        kd_err_clear(&s->err);
        s->st = kd_dataset_get(l->ds, l->order + start, count, s->x, s->y, &s->n, &s->err);
        s->n_skipped = s->st ? 0 : count - s->n;
        lock(l);
        s->full = 1;
        wake(l);
        unlock(l);
        if (s->st) break;  /* the consumer reports it; nothing after an error is useful */
    }
    return NULL;
}

void kd_loader_close(kd_loader *l) {
    if (!l) return;
    if (l->thread_started) {
        lock(l);
        l->stop = 1;
        wake(l);
        unlock(l);
        KD_ASSERT(pthread_join(l->thread, NULL) == 0);
    }
    if (l->have_cv) KD_ASSERT(pthread_cond_destroy(&l->cv) == 0);
    if (l->have_mu) KD_ASSERT(pthread_mutex_destroy(&l->mu) == 0);
    for (size_t i = 0; i < KD_LOADER_QUEUE; i++) {
        kd_free_aligned(l->slots[i].x);
        free(l->slots[i].y);
    }
    free(l->order);
    free(l);
}

static kd_status loader_open(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                             size_t batch_size, kd_loader_mode mode, size_t rank, size_t ranks,
                             kd_err *err) {
    kd_status st = KD_OK;
    *out = NULL;
    if (batch_size == 0) return kd_err_set(err, KD_EUSAGE, "batch size: expected > 0, got 0");
    KD_ASSERT(ranks > 0 && rank < ranks);
    const kd_data_info *info = kd_dataset_info(ds);
    for (size_t i = 0; i < n; i++)
        if (order[i] >= info->n)
            return kd_err_set(err, KD_EUSAGE, "loader order[%zu] = %zu: expected < %zu", i, order[i],
                              info->n);
    kd_loader *l = calloc(1, sizeof *l);
    if (!l) return kd_err_set(err, KD_EIO, "out of memory");
    l->ds = ds;
    l->n = n;
    l->batch_size = batch_size;
    l->rank = rank;
    l->ranks = ranks;
    l->numel = kd_shape_numel(&info->shape);
    l->n_batches = n / batch_size + (n % batch_size != 0);
    const kd_format_ops *ops = kd_data_format_ops(info->format);
    l->threaded = mode == KD_LOADER_THREAD ||
                  (mode == KD_LOADER_AUTO && ops && ops->decodes_per_batch);
    l->n_slots = l->threaded ? KD_LOADER_QUEUE : 1;
    l->order = malloc((n ? n : 1) * sizeof(size_t));
    if (!l->order) {
        st = kd_err_set(err, KD_EIO, "out of memory");
        goto cleanup;
    }
    if (n) memcpy(l->order, order, n * sizeof(size_t));
    size_t cap_b = batch_size < n ? batch_size : (n ? n : 1);
    size_t xs;
    if (kd_mul_size(cap_b, l->numel, &xs)) {
        st = kd_err_set(err, KD_EUSAGE, "batch size %zu too large", batch_size);
        goto cleanup;
    }
    for (size_t i = 0; i < l->n_slots; i++) {
        l->slots[i].x = kd_alloc_floats(xs);
        l->slots[i].y = malloc(cap_b * sizeof(int32_t));
        if (!l->slots[i].x || !l->slots[i].y) {
            st = kd_err_set(err, KD_EIO, "out of memory for %zu batch buffers", l->n_slots);
            goto cleanup;
        }
    }
    if (l->threaded) {
        l->have_mu = pthread_mutex_init(&l->mu, NULL) == 0;
        l->have_cv = l->have_mu && pthread_cond_init(&l->cv, NULL) == 0;
        if (!l->have_cv) {
            st = kd_err_set(err, KD_EIO, "cannot set up the data loader thread's lock");
            goto cleanup;
        }
        if (l->n_batches > 0) {
            /* The test hook stands in for a system out of threads. */
            int rc = KD_HOOK_VALUE(kd_loader_fail_thread_start, 0)
                         ? EAGAIN
                         : pthread_create(&l->thread, NULL, worker_main, l);
            KD_HOOK_RUN(kd_loader_fail_thread_start = 0);
            if (rc != 0) {
                st = kd_err_set(err, KD_EIO, "cannot start the data loader thread");
                goto cleanup;
            }
            l->thread_started = 1;
        }
    }

cleanup:
    if (st) {
        kd_loader_close(l);
        return st;
    }
    *out = l;
    return KD_OK;
}

kd_status kd_loader_open_mode(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                              size_t batch_size, kd_loader_mode mode, kd_err *err) {
    return loader_open(out, ds, order, n, batch_size, mode, 0, 1, err);
}

kd_status kd_loader_open(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                         size_t batch_size, kd_err *err) {
    return loader_open(out, ds, order, n, batch_size, KD_LOADER_AUTO, 0, 1, err);
}

kd_status kd_loader_open_shard(kd_loader **out, kd_dataset *ds, const size_t *order, size_t n,
                               size_t batch_size, size_t rank, size_t ranks, kd_err *err) {
    return loader_open(out, ds, order, n, batch_size, KD_LOADER_AUTO, rank, ranks, err);
}

/* The next slice's slot, filled (decoded here in the synchronous mode, by the worker in the
 * threaded one); NULL after the last. The slot handed out before goes back to the worker only
 * now, so a batch stays valid until the next call, as documented. */
static kd_status take_slice(kd_loader *l, slot **out, kd_err *err) {
    *out = NULL;
    if (l->failed) {
        *err = l->fail_err;
        return l->failed;
    }
    if (!l->threaded) {
        if (l->next_batch >= l->n_batches) return KD_OK;
        slot *s = &l->slots[0];
        size_t start, count;
        batch_span(l, l->next_batch, &start, &count);
        kd_status st = kd_dataset_get(l->ds, l->order + start, count, s->x, s->y, &s->n, err);
        if (st) {
            l->failed = st;
            l->fail_err = *err;
            return st;
        }
        s->n_skipped = count - s->n;
        l->next_batch++;
        *out = s;
        return KD_OK;
    }
    lock(l);
    if (l->held) {
        l->slots[(l->next_batch - 1) % l->n_slots].full = 0;
        l->held = 0;
        wake(l);
    }
    if (l->next_batch >= l->n_batches) {
        unlock(l);
        return KD_OK;
    }
    slot *s = &l->slots[l->next_batch % l->n_slots];
    while (!s->full) wait_cv(l);
    unlock(l);
    if (s->st) {
        l->failed = s->st;
        l->fail_err = s->err;
        *err = s->err;
        return s->st;
    }
    l->held = 1;
    l->next_batch++;
    *out = s;
    return KD_OK;
}

kd_status kd_loader_next(kd_loader *l, kd_batch *b, kd_err *err) {
    memset(b, 0, sizeof *b);
    for (;;) {
        slot *s;
        kd_status st = take_slice(l, &s, err);
        if (st || !s) return st;  /* the end: n = 0, with what trailing slices left out */
        b->n_skipped += s->n_skipped;
        b->slices++;
        /* A slice whose samples were all left out is not a batch: n = 0 means the end. A shard
         * is handed out even when empty: every rank must step through every global batch. */
        if (s->n == 0 && l->ranks == 1) continue;
        b->x = s->x;
        b->y = s->y;
        b->n = s->n;
        /* The slice just taken is number next_batch - 1 of the order (this rank's shard of it). */
        size_t start, count;
        batch_span(l, l->next_batch - 1, &start, &count);
        b->idx = s->n_skipped ? NULL : l->order + start;
        return KD_OK;
    }
}
