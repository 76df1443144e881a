/* suggest.c - near-miss suggestions for mistyped names (the one edit distance of the code base). */
#include "kd_suggest.h"

#include <ctype.h>
#include <string.h>

int kd_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63) return 99;
    int d[64][64];
    for (size_t i = 0; i <= la; i++) d[i][0] = (int)i;
    for (size_t j = 0; j <= lb; j++) d[0][j] = (int)j;
    for (size_t i = 1; i <= la; i++)
        for (size_t j = 1; j <= lb; j++) {
            int ca = tolower((unsigned char)a[i - 1]), cb = tolower((unsigned char)b[j - 1]);
            int best = d[i - 1][j - 1] + (ca != cb);
            if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
            if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
                tolower((unsigned char)a[i - 2]) == cb && d[i - 2][j - 2] + 1 < best)
                best = d[i - 2][j - 2] + 1;
            d[i][j] = best;
        }
    return d[la][lb];
}

static int has_prefix_ci(const char *s, const char *prefix) {
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != tolower((unsigned char)*prefix)) return 0;
    return 1;
}

/* Words people reach for that are spelled differently here. */
static const char *const aliases[][2] = {
    {"learning_rate", "lr"}, {"wd", "weight_decay"}, {"bs", "batch_size"},
    {"T", "temperature"},    {"optim", "optimizer"},  {"distillation", "distill"},
    {"val", "validation"},   {"type", "name"},        {"checkpoint_path", "checkpoint"},
};

const char *kd_suggest(const char *word, const char *const *cands, size_t n) {
    for (size_t a = 0; a < sizeof aliases / sizeof aliases[0]; a++)
        if (strcmp(word, aliases[a][0]) == 0)
            for (size_t i = 0; i < n; i++)
                if (strcmp(cands[i], aliases[a][1]) == 0) return cands[i];
    size_t len = strlen(word);
    int limit = len <= 3 ? 1 : 2;
    const char *best = NULL;
    int best_d = limit + 1;
    for (size_t i = 0; i < n; i++) {
        int d = kd_edit_distance(word, cands[i]);
        if (d < best_d) best_d = d, best = cands[i];
    }
    if (best) return best;
    if (len < 2) return NULL;
    for (size_t i = 0; i < n; i++)
        if (has_prefix_ci(cands[i], word) || (strlen(cands[i]) >= 2 && has_prefix_ci(word, cands[i])))
            return cands[i];
    return NULL;
}
