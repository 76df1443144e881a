/* kd_suggest.h - "did you mean ...?" for mistyped names: one edit distance and one suggestion
 * rule for config keys, layer fields, command-line options and format names alike. */
#ifndef KD_SUGGEST_H
#define KD_SUGGEST_H

#include <stddef.h>

/* Optimal-string-alignment distance (Levenshtein plus adjacent transpositions), ignoring case;
 * strings longer than 63 bytes count as far apart (99). */
int kd_edit_distance(const char *a, const char *b);

/* The best candidate for a mistyped word: a known alias ("learning_rate" -> "lr"), else the
 * closest candidate within edit distance 2 (1 for words of 3 letters or fewer), else a
 * candidate the word is a prefix of (or that is a prefix of the word), at least 2 letters long.
 * NULL if nothing is close. Returns one of cands. */
const char *kd_suggest(const char *word, const char *const *cands, size_t n);

#endif
