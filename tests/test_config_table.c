/* test_config_table.c - the config key table, walked key by key: every key round-trips through
 * --set and the resolved write-back, keys of one variant are refused with another, near-miss
 * keys get a suggestion, every key is documented, every shipped config round-trips, and
 * out-of-memory anywhere after reading the JSON is KD_EIO, never a partial config. */
#define _DEFAULT_SOURCE /* DT_REG */
#include <cJSON.h>
#include <dirent.h>
#include <stdlib.h>
#include <string.h>

#include "../src/config/config_impl.h"
#include "kd_test.h"

/* Sources are written for data.train; data.test and data.validation reuse them. */
#define SOURCE_PREFIX "data.train."
#define BASE                                                                               \
    "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"/i\"},"                      \
    " \"test\": {\"format\": \"idx\", \"path\": \"/t\"}},"                                 \
    " \"model\": {\"layers\": [{\"type\": \"relu\"}]},"                                    \
    " \"teacher\": {\"checkpoint\": \"/teacher.st\"}}"
#define VALIDATION_SOURCE "data.validation={\"format\": \"idx\", \"path\": \"/v\"}"

/* For each key: a value that differs from BASE's (and from the default) and reads back as
 * written, the --sets it needs to be legal (a selector value is added by the test), and the
 * variants that use it: said here independently of the table, to check its masks. */
typedef struct {
    const char *set;
    const char *needs[2];
    const char *only;  /* the variants that use the key, space-separated (NULL: all) */
    const char *also;  /* another key whose resolved value the example changes (the default
                          it implies, or the alternative it replaces) */
    const char *written_as;  /* read, but written back as this key (distill.alpha: as the
                                distill.losses list it means) */
} example;

static const example examples[] = {
    {.set = "data.train.format=\"csv\""},
    {.set = "data.train.path=\"/abs/p\""},
    {.set = "data.train.labels=\"/abs/l\"", .only = "idx"},
    {.set = "data.train.label_column=\"y\"", .only = "csv"},
    {.set = "data.train.header=false", .only = "csv"},
    {.set = "data.train.delimiter=\";\"", .only = "csv"},
    {.set = "data.train.channels=3", .only = "images"},
    {.set = "data.train.height=32", .only = "images"},
    {.set = "data.train.width=30", .only = "images"},
    {.set = "data.train.skip_bad=true", .only = "images"},
    {.set = "data.train.unlabeled=true", .only = "images"},
    {.set = "data.train.subset=100"},
    {.set = "data.train.subset_seed=5", .needs = {"data.train.subset=100"}},
    {.set = "data.validation_split=0.25"},
    {.set = "data.use_labels=false", .also = "distill.losses"},
    {.set = "data.classes=[\"a\", \"b\"]"},
    {.set = "data.preprocess.scale=0.5"},
    {.set = "data.preprocess.mean=[0.5, 0.25]", .needs = {"data.preprocess.std=[2, 4]"}},
    {.set = "data.preprocess.std=[2, 4]", .needs = {"data.preprocess.mean=[0.5, 0.25]"}},
    {.set = "data.preprocess.flatten=true"},
    {.set = "data.preprocess.standardize=true"},
    {.set = "data.augment.shift=2"},
    {.set = "data.augment.flip=true"},
    {.set = "model.input=[1, 28, 28]"},
    {.set = "model.layers=[{\"type\": \"dense\", \"units\": 3}]"},
    {.set = "model.init=\"xavier\""},
    {.set = "teacher.checkpoint=\"/abs/t2.st\""},
    {.set = "teacher.layers=[{\"type\": \"dense\", \"units\": 3}]"},
    {.set = "teacher.ensemble=[{\"checkpoint\": \"/abs/a.st\", \"weight\": 2}]",
     .needs = {"teacher.checkpoint=null"}, .also = "teacher.checkpoint"},
    {.set = "teacher.logits=\"/abs/l.st\"", .needs = {"teacher.checkpoint=null"},
     .also = "teacher.checkpoint"},
    {.set = "teacher.output=\"logits\"", .needs = {"teacher.checkpoint=\"/abs/t.onnx\""}},
    {.set = "teacher.preprocess=\"raw\"", .needs = {"teacher.checkpoint=\"/abs/t.onnx\""}},
    {.set = "teacher.cache.path=\"/abs/c.kdc\""},
    {.set = "teacher.cache.dtype=\"f16\"", .needs = {"teacher.cache.path=\"/abs/c.kdc\""}},
    {.set = "teacher.cache.top_k=4", .needs = {"teacher.cache.path=\"/abs/c.kdc\""}},
    {.set = "teacher.cache.views=2",
     .needs = {"teacher.cache.path=\"/abs/c.kdc\"", "data.augment.shift=1"},
     .also = "data.augment"},
    {.set = "teacher.cache.seed=3", .needs = {"teacher.cache.path=\"/abs/c.kdc\""}},
    {.set = "distill.kind=\"mse\"", .written_as = "distill.losses"},
    {.set = "distill.temperature=2.5", .only = "kl", .written_as = "distill.losses"},
    {.set = "distill.alpha=0.5", .written_as = "distill.losses"},
    {.set = "distill.losses=[{\"type\": \"dkd\", \"weight\": 1, \"temperature\": 4, "
            "\"alpha\": 1, \"beta\": 8, \"warmup_epochs\": 20}]"},
    {.set = "optimizer.name=\"adamw\""},
    {.set = "optimizer.lr=0.05"},
    {.set = "optimizer.momentum=0.5", .only = "sgd"},
    {.set = "optimizer.nesterov=true", .needs = {"optimizer.momentum=0.9"}, .only = "sgd"},
    {.set = "optimizer.beta1=0.8", .only = "adam adamw"},
    {.set = "optimizer.beta2=0.99", .only = "adam adamw"},
    {.set = "optimizer.eps=1e-6", .only = "adam adamw"},
    {.set = "optimizer.weight_decay=0.0005"},
    {.set = "optimizer.clip_norm=2"},
    {.set = "schedule.name=\"cosine\""},
    {.set = "schedule.warmup_epochs=1.5", .also = "schedule.warmup_steps"},
    {.set = "schedule.warmup_steps=5"},
    {.set = "schedule.step_epochs=2", .only = "step", .also = "schedule.step_size"},
    {.set = "schedule.step_size=7", .only = "step"},
    {.set = "schedule.gamma=0.5", .needs = {"schedule.step_size=7"}, .only = "step"},
    {.set = "schedule.min_lr=0.0001", .only = "cosine"},
    {.set = "train.epochs=3"},
    {.set = "train.batch_size=64"},
    {.set = "train.seed=42"},
    {.set = "train.threads=2"},
    {.set = "output.dir=\"/abs/out\""},
    {.set = "output.save_best=false"},
};

/* A key's path as the examples spell it (data.test.x and data.validation.x as data.train.x). */
static void example_path(const char *path, char *out, size_t cap) {
    static const char *const others[] = {"data.test.", "data.validation."};
    for (size_t i = 0; i < 2; i++)
        if (strncmp(path, others[i], strlen(others[i])) == 0) {
            snprintf(out, cap, "%s%s", SOURCE_PREFIX, path + strlen(others[i]));
            return;
        }
    snprintf(out, cap, "%s", path);
}

static const example *find_example(const char *path) {
    char want[KD_CFG_JPATH_MAX];
    example_path(path, want, sizeof want);
    for (size_t i = 0; i < sizeof examples / sizeof examples[0]; i++) {
        size_t n = strlen(want);
        if (strncmp(examples[i].set, want, n) == 0 && examples[i].set[n] == '=') return &examples[i];
    }
    return NULL;
}

/* The example's --set moved to the key's own source section. */
static void retarget(const char *set, const char *path, char *out, size_t cap) {
    char want[KD_CFG_JPATH_MAX];
    example_path(path, want, sizeof want);
    if (strcmp(want, path) != 0 && strncmp(set, SOURCE_PREFIX, strlen(SOURCE_PREFIX)) == 0) {
        size_t keep = strlen(path) - (strlen(want) - strlen(SOURCE_PREFIX));
        snprintf(out, cap, "%.*s%s", (int)keep, path, set + strlen(SOURCE_PREFIX));
    } else {
        snprintf(out, cap, "%s", set);
    }
}

/* The value at a dotted path of a JSON tree (NULL if absent). */
static const cJSON *at_path(const cJSON *root, const char *path) {
    char buf[KD_CFG_JPATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *cur = root;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, "."))
        cur = cJSON_GetObjectItemCaseSensitive(cur, tok);
    return cur;
}

/* "--set section.selector=name" choosing variant v of sec for the key at path. */
static void selector_set(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                         int v, char *out, size_t cap) {
    const kd_cfg_key *sel = kd_cfg_selector(sec);
    size_t n;
    const char *const *names = sel->names(&n);
    int parent_len = (int)(strlen(path) - strlen(k->name) - 1);
    snprintf(out, cap, "%.*s.%s=\"%s\"", parent_len, path, sel->name, names[v]);
}

static int leaf(const kd_cfg_key *k) { return k->sub == NULL; }

typedef struct {
    int n_keys;
    const char *base_dir;
} walk_state;

static kd_status load_text(kd_config *c, const char *text, const char *const *sets, size_t n,
                           kd_err *err) {
    return kd_config_parse(c, text, strlen(text), "base.json", "/", sets, n, err);
}

/* The variants the example names, as a mask over the section's selector names. */
static unsigned expected_variants(const example *ex, const kd_cfg_section *sec) {
    if (!ex->only) return 0;
    size_t n;
    const char *const *names = kd_cfg_selector(sec)->names(&n);
    char buf[64];
    unsigned mask = 0;
    snprintf(buf, sizeof buf, "%s", ex->only);
    for (char *tok = strtok(buf, " "); tok; tok = strtok(NULL, " "))
        for (size_t i = 0; i < n; i++)
            if (strcmp(names[i], tok) == 0) mask |= 1u << i;
    return mask;
}

static void remove_path(cJSON *root, const char *path) {
    char parent[KD_CFG_JPATH_MAX];
    const char *dot = strrchr(path, '.');
    if (!dot) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, path);
        return;
    }
    snprintf(parent, sizeof parent, "%.*s", (int)(dot - path), path);
    cJSON *p = (cJSON *)at_path(root, parent);
    if (p) cJSON_DeleteItemFromObjectCaseSensitive(p, dot + 1);
}

static void set_path(const char *set, char *out) {
    snprintf(out, KD_CFG_JPATH_MAX, "%.*s", (int)(strchr(set, '=') - set), set);
}

/* Setting the key changed its resolved value and nothing else but what it needs. */
static void check_only_key_changed(const char *path, const example *ex, const cJSON *without,
                                   const cJSON *with, const char *const *sets, size_t n) {
    char p[KD_CFG_JPATH_MAX];
    cJSON *a = cJSON_Duplicate(without, 1), *b = cJSON_Duplicate(with, 1);
    for (size_t i = 0; i < n; i++) {
        set_path(sets[i], p);
        remove_path(a, p);
        remove_path(b, p);
    }
    if (ex->also) remove_path(a, ex->also), remove_path(b, ex->also);
    /* A section written only when something in it is set comes with all of its keys. */
    snprintf(p, sizeof p, "%.*s", (int)(strrchr(path, '.') - path), path);
    if (!at_path(without, p)) remove_path(b, p);
    if (!cJSON_Compare(a, b, 1)) {
        char *sa = cJSON_PrintUnformatted(a), *sb = cJSON_PrintUnformatted(b);
        kd_test_fail(__FILE__, __LINE__, "%s: setting it changed other keys:\n%s\n---\n%s", path,
                     sa, sb);
        free(sa);
        free(sb);
    }
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static int check_round_trip(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                            size_t off, void *user) {
    walk_state *ws = user;
    (void)off;
    if (!leaf(k)) return 0;
    ws->n_keys++;
    const example *ex = find_example(path);
    if (!ex) {
        kd_test_fail(__FILE__, __LINE__, "%s: no example (add one to examples[])", path);
        return 0;
    }
    if (k->variants != expected_variants(ex, sec))
        kd_test_fail(__FILE__, __LINE__, "%s: the table's variants are 0x%x, want \"%s\"", path,
                     k->variants, ex->only ? ex->only : "(all)");
    char sets_buf[5][KD_CFG_JPATH_MAX + 64];
    const char *sets[5];
    size_t n = 0;
    if (strncmp(path, "data.validation.", 16) == 0) sets[n++] = VALIDATION_SOURCE;
    if (k->variants) {
        int v = 0;
        while (!(k->variants & (1u << v))) v++;
        selector_set(path, k, sec, v, sets_buf[n], sizeof sets_buf[n]);
        sets[n] = sets_buf[n];
        n++;
    }
    size_t n_plain = n;  /* what "without" has: the key's section and variant only */
    for (size_t i = 0; i < 2 && ex->needs[i]; i++, n++) {
        retarget(ex->needs[i], path, sets_buf[n], sizeof sets_buf[n]);
        sets[n] = sets_buf[n];
    }
    retarget(ex->set, path, sets_buf[n], sizeof sets_buf[n]);
    sets[n] = sets_buf[n];
    n++;

    kd_config without, c1, c2;
    kd_err err;
    cJSON *want = cJSON_Parse(strchr(sets[n - 1], '=') + 1);
    CHECK(want != NULL);
    /* Without the key: its section and variant only, or with what it needs when that alone
     * is not legal (a "step" schedule needs a step size); NULL when neither is. */
    int have_without = load_text(&without, BASE, sets, n_plain, &err) == KD_OK ||
                       load_text(&without, BASE, sets, n - 1, &err) == KD_OK;
    if (load_text(&c1, BASE, sets, n, &err) != KD_OK) {
        kd_test_fail(__FILE__, __LINE__, "%s: %s", path, err.msg);
    } else {
        /* The value reached its field and came back out under the same key (or, for an older
         * key, as the key that replaced it). */
        const cJSON *got = at_path(c1.resolved, path);
        if (ex->written_as) {
            if (got || !at_path(c1.resolved, ex->written_as))
                kd_test_fail(__FILE__, __LINE__, "%s: not written back as %s", path,
                             ex->written_as);
        } else if (!got || !cJSON_Compare(got, want, 1)) {
            char *s = cJSON_PrintUnformatted(c1.resolved);
            kd_test_fail(__FILE__, __LINE__, "%s: resolved value differs from %s: %s", path,
                         sets[n - 1], s);
            free(s);
        }
        const cJSON *before = have_without ? at_path(without.resolved, path) : NULL;
        if (before && cJSON_Compare(before, want, 1))
            kd_test_fail(__FILE__, __LINE__, "%s: the example equals the value without it", path);
        /* A selector changes which keys are written; an older key writes another. */
        if (have_without && !(k->flags & CFG_SELECTOR) && !ex->written_as)
            check_only_key_changed(path, ex, without.resolved, c1.resolved, sets + n_plain,
                                   n - n_plain);
        /* And the resolved JSON reads back to itself. */
        char *j1 = kd_config_to_json(&c1), *j2 = NULL;
        if (load_text(&c2, j1, NULL, 0, &err) != KD_OK)
            kd_test_fail(__FILE__, __LINE__, "%s: reloading: %s", path, err.msg);
        else if (!(j2 = kd_config_to_json(&c2)) || strcmp(j1, j2) != 0)
            kd_test_fail(__FILE__, __LINE__, "%s: round trip differs:\n%s\n---\n%s", path, j1, j2);
        free(j1);
        free(j2);
        kd_config_free(&c2);
    }
    cJSON_Delete(want);
    kd_config_free(&without);
    kd_config_free(&c1);
    return 0;
}

KD_TEST(config_table_every_key_round_trips_through_set_and_write_back) {
    walk_state ws = {0, NULL};
    kd_cfg_walk(check_round_trip, &ws);
    CHECK(ws.n_keys >= 60);  /* 13 keys in each of 3 sources, and the rest */
}

static int check_wrong_variant(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                               size_t off, void *user) {
    int *n_checked = user;
    (void)off;
    if (!leaf(k) || !k->variants) return 0;
    const example *ex = find_example(path);
    if (!ex) return 0;  /* reported by the round-trip test */
    size_t n_names;
    kd_cfg_selector(sec)->names(&n_names);
    for (int v = 0; v < (int)n_names; v++) {
        if (k->variants & (1u << v)) continue;
        char sel[KD_CFG_JPATH_MAX + 64], own[KD_CFG_JPATH_MAX + 64], want[KD_CFG_JPATH_MAX + 64];
        const char *sets[3];
        size_t n = 0;
        if (strncmp(path, "data.validation.", 16) == 0) sets[n++] = VALIDATION_SOURCE;
        selector_set(path, k, sec, v, sel, sizeof sel);
        retarget(ex->set, path, own, sizeof own);
        sets[n++] = sel;
        sets[n++] = own;
        kd_config c;
        kd_err err;
        kd_status st = load_text(&c, BASE, sets, n, &err);
        snprintf(want, sizeof want, "base.json: %s: not used by ", path);
        if (st != KD_EUSAGE || !strstr(err.msg, want))
            kd_test_fail(__FILE__, __LINE__, "%s with %s: status %d: %s", path, sel, st, err.msg);
        kd_config_free(&c);
        (*n_checked)++;
    }
    return 0;
}

KD_TEST(config_table_variant_keys_rejected_with_another_variant) {
    int n_checked = 0;
    kd_cfg_walk(check_wrong_variant, &n_checked);
    CHECK(n_checked >= 30);
}

/* Each key misspelled (its first two letters swapped) gets it suggested, with the path. */
static int check_near_miss(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                           size_t off, void *user) {
    int *n_checked = user;
    (void)sec, (void)off;
    char typo[64], set[KD_CFG_JPATH_MAX + 64], want[KD_CFG_JPATH_MAX + 128];
    snprintf(typo, sizeof typo, "%s", k->name);
    char t = typo[0];
    typo[0] = typo[1];
    typo[1] = t;
    int parent_len = (int)(strlen(path) - strlen(k->name));
    snprintf(set, sizeof set, "%.*s%s=1", parent_len, path, typo);
    const char *sets[1] = {set};
    kd_config c;
    kd_err err;
    kd_status st = load_text(&c, BASE, sets, 1, &err);
    snprintf(want, sizeof want, "base.json: %.*s%s: unknown key (did you mean \"%s\"?)",
             parent_len, path, typo, k->name);
    if (st != KD_EUSAGE || !strstr(err.msg, want))
        kd_test_fail(__FILE__, __LINE__, "--set %s: status %d: %s\n  want: %s", set, st, err.msg, want);
    kd_config_free(&c);
    (*n_checked)++;
    return 0;
}

KD_TEST(config_table_near_miss_keys_get_a_suggestion) {
    int n_checked = 0;
    kd_cfg_walk(check_near_miss, &n_checked);
    CHECK(n_checked >= 70);
    /* In the file too, not only through --set. */
    const char *text = "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"/i\"}, "
                       "\"preprocess\": {\"sclae\": 2}}, \"model\": {\"layers\": [{\"type\": \"relu\"}]}}";
    kd_config c;
    kd_err err;
    CHECK_EQ_INT(load_text(&c, text, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "base.json: data.preprocess.sclae: unknown key (did you mean \"scale\"?)");
}

typedef struct {
    const char *readme;
    int n;
} doc_state;

/* Keys of a source are documented by name in the Sources table; the rest by their path. */
static int check_documented(const char *path, const kd_cfg_key *k, const kd_cfg_section *sec,
                            size_t off, void *user) {
    doc_state *ds = user;
    char want[KD_CFG_JPATH_MAX + 4];
    (void)sec, (void)off;
    char as_train[KD_CFG_JPATH_MAX];
    example_path(path, as_train, sizeof as_train);
    int in_source = strncmp(as_train, SOURCE_PREFIX, strlen(SOURCE_PREFIX)) == 0;
    snprintf(want, sizeof want, "`%s`", in_source ? k->name : path);
    if (!strstr(ds->readme, want))
        kd_test_fail(__FILE__, __LINE__, "configs/README.md does not document %s (no %s)", path, want);
    ds->n++;
    return 0;
}

KD_TEST(config_table_every_key_is_documented) {
    char *text = NULL;
    size_t len = 0;
    kd_err err;
    if (kd_read_file("configs/README.md", (size_t)1 << 20, &text, &len, &err) != KD_OK) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    doc_state ds = {text, 0};
    kd_cfg_walk(check_documented, &ds);
    CHECK(ds.n >= 70);
    free(text);
}

/* Every shipped config: its resolved JSON loads to the identical JSON. */
KD_TEST(config_every_shipped_config_round_trips) {
    DIR *d = opendir("configs");
    CHECK(d != NULL);
    if (!d) return;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) continue;
        char path[KD_PATH_MAX];
        snprintf(path, sizeof path, "configs/%s", e->d_name);
        kd_config c1, c2;
        kd_err err;
        if (kd_config_load(&c1, path, NULL, 0, &err) != KD_OK) {
            kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
            continue;
        }
        char *j1 = kd_config_to_json(&c1), *j2 = NULL;
        CHECK(j1 != NULL);
        if (kd_config_parse(&c2, j1, strlen(j1), path, "/", NULL, 0, &err) != KD_OK)
            kd_test_fail(__FILE__, __LINE__, "%s reloaded: %s", path, err.msg);
        else if (!(j2 = kd_config_to_json(&c2)) || strcmp(j1, j2) != 0)
            kd_test_fail(__FILE__, __LINE__, "%s: round trip differs:\n%s\n---\n%s", path, j1, j2);
        free(j1);
        free(j2);
        kd_config_free(&c1);
        kd_config_free(&c2);
        n++;
    }
    closedir(d);
    CHECK(n >= 10);
}

/* Resolved JSON, byte for byte, as the config code before the key table wrote it (absolute
 * paths, defaults filled, keys of other variants left out, floats shortest). */
static const struct {
    const char *config, *resolved;
} golden[] = {
    {"{\"data\":{\"train\":{\"path\":\"x-ubyte\"}},\"model\":{\"layers\":[{\"type\":\"relu\""
     "}]},\"output\":{\"dir\":\"/o\"}}",
     "{\"data\":{\"train\":{\"format\":\"idx\",\"path\":\"/cfg/x-ubyte\",\"subset\":0},\"va"
     "lidation_split\":0.1,\"use_labels\":true,\"preprocess\":{\"scale\":\"auto\",\"fl"
     "atten\":false}},\"model\":{\"layers\":[{\"type\":\"relu\"}],\"init\":\"he\"},\"optim"
     "izer\":{\"name\":\"sgd\",\"lr\":0.01,\"momentum\":0,\"nesterov\":false,\"weight_de"
     "cay\":0,\"clip_norm\":0},\"schedule\":{\"name\":\"constant\",\"warmup_steps\":0},"
     "\"train\":{\"epochs\":10,\"batch_size\":128,\"seed\":0,\"threads\":0},\"output\":{"
     "\"dir\":\"/o\",\"save_best\":true}}"},
    {"{\"data\":{\"train\":{\"format\":\"csv\",\"path\":\"d/a.csv\",\"label_column\":-1,\"h"
     "eader\":true,\"delimiter\":\";\"},\"test\":{\"path\":\"t.tsv\"},\"validation_split"
     "\":500,\"classes\":[\"a\",\"b\"],\"preprocess\":{\"scale\":0.5,\"mean\":[0.5,0.25],"
     "\"std\":[2,4],\"flatten\":true},\"augment\":{\"shift\":2}},\"model\":{\"input\":[2"
     ",3,4],\"layers\":[{\"type\":\"dense\",\"units\":2}],\"init\":\"xavier\"},\"teacher\""
     ":{\"checkpoint\":\"../t.st\"},\"distill\":{\"temperature\":2.5,\"alpha\":0.3},\"o"
     "ptimizer\":{\"lr\":0.05,\"momentum\":0.9,\"nesterov\":true,\"weight_decay\":0.0"
     "005,\"clip_norm\":1},\"schedule\":{\"name\":\"step\",\"warmup_steps\":10,\"step_s"
     "ize\":100,\"gamma\":0.5},\"train\":{\"epochs\":3,\"batch_size\":64,\"seed\":90071"
     "99254740991,\"threads\":2},\"output\":{\"dir\":\"/o\",\"save_best\":false}}",
     "{\"data\":{\"train\":{\"format\":\"csv\",\"path\":\"/cfg/d/a.csv\",\"label_column\":"
     "\"-1\",\"header\":true,\"delimiter\":\";\",\"subset\":0},\"test\":{\"format\":\"csv\","
     "\"path\":\"/cfg/t.tsv\",\"header\":\"auto\",\"delimiter\":\",\",\"subset\":0},\"valid"
     "ation_split\":500,\"use_labels\":true,\"classes\":[\"a\",\"b\"],\"preprocess\":{\""
     "scale\":0.5,\"mean\":[0.5,0.25],\"std\":[2,4],\"flatten\":true},\"augment\":{\"s"
     "hift\":2,\"flip\":false}},\"model\":{\"input\":[2,3,4],\"layers\":[{\"type\":\"den"
     "se\",\"units\":2}],\"init\":\"xavier\"},\"teacher\":{\"checkpoint\":\"/t.st\"},\"dis"
     "till\":{\"losses\":[{\"type\":\"kl\",\"weight\":0.30000001192092896,\"temperat"
     "ure\":2.5},{\"type\":\"ce\",\"weight\":0.699999988079071}]},\"optimizer\":{\"name\":"
     "\"sgd\",\"lr\":0.05,\"momentum\":0.9,\"nesterov\":true,\"weight_decay\":0.0005,\""
     "clip_norm\":1},\"schedule\":{\"name\":\"step\",\"warmup_steps\":10,\"step_size\":"
     "100,\"gamma\":0.5},\"train\":{\"epochs\":3,\"batch_size\":64,\"seed\":9.00719925"
     "474099e+15,\"threads\":2},\"output\":{\"dir\":\"/o\",\"save_best\":false}}"},
    {"{\"data\":{\"train\":{\"format\":\"images\",\"path\":\"/img\",\"channels\":3,\"height"
     "\":16,\"width\":20,\"skip_bad\":true,\"unlabeled\":true,\"subset\":100,\"subset_"
     "seed\":7},\"validation\":{\"path\":\"v.idx\",\"labels\":\"vl.idx\"},\"use_labels\":"
     "false,\"augment\":{\"flip\":true}},\"model\":{\"layers\":[{\"type\":\"relu\"}]},\"t"
     "eacher\":{\"checkpoint\":\"/t.st\",\"layers\":[{\"type\":\"relu\"}]},\"distill\":{\""
     "kind\":\"mse\"},\"optimizer\":{\"name\":\"adamw\",\"beta1\":0.8,\"beta2\":0.99,\"eps"
     "\":1e-6},\"schedule\":{\"name\":\"cosine\",\"warmup_epochs\":0.5,\"min_lr\":0.000"
     "1},\"output\":{\"dir\":\"/rel/./out\"}}",
     "{\"data\":{\"train\":{\"format\":\"images\",\"path\":\"/img\",\"channels\":3,\"height"
     "\":16,\"width\":20,\"skip_bad\":true,\"unlabeled\":true,\"subset\":100,\"subset_"
     "seed\":7},\"validation\":{\"format\":\"idx\",\"path\":\"/cfg/v.idx\",\"labels\":\"/c"
     "fg/vl.idx\",\"subset\":0},\"use_labels\":false,\"preprocess\":{\"scale\":\"auto\""
     ",\"flatten\":false},\"augment\":{\"shift\":0,\"flip\":true}},\"model\":{\"layers\""
     ":[{\"type\":\"relu\"}],\"init\":\"he\"},\"teacher\":{\"checkpoint\":\"/t.st\",\"layer"
     "s\":[{\"type\":\"relu\"}]},\"distill\":{\"losses\":[{\"type\":\"mse\",\"weight\":"
     "1}]},\"optimizer\":{"
     "\"name\":\"adamw\",\"lr\":0.001,\"beta1\":0.8,\"beta2\":0.99,\"eps\":1e-06,\"weight"
     "_decay\":0,\"clip_norm\":0},\"schedule\":{\"name\":\"cosine\",\"warmup_epochs\":0"
     ".5,\"min_lr\":0.0001},\"train\":{\"epochs\":10,\"batch_size\":128,\"seed\":0,\"th"
     "reads\":0},\"output\":{\"dir\":\"/rel/out\",\"save_best\":true}}"},
};

KD_TEST(config_resolved_json_is_unchanged_byte_for_byte) {
    for (size_t i = 0; i < sizeof golden / sizeof golden[0]; i++) {
        kd_config c;
        kd_err err;
        const char *text = golden[i].config;
        if (kd_config_parse(&c, text, strlen(text), "g.json", "/cfg", NULL, 0, &err) != KD_OK) {
            kd_test_fail(__FILE__, __LINE__, "golden %zu: %s", i, err.msg);
            continue;
        }
        char *got = cJSON_PrintUnformatted(c.resolved);
        if (!got || strcmp(got, golden[i].resolved) != 0)
            kd_test_fail(__FILE__, __LINE__, "golden %zu:\n  got:  %s\n  want: %s", i, got,
                         golden[i].resolved);
        free(got);
        kd_config_free(&c);
    }
}

/* cJSON allocations fail from the Nth on (0: never). */
static long g_alloc_count, g_fail_from;
static void *counting_malloc(size_t n) {
    if (g_fail_from && ++g_alloc_count >= g_fail_from) return NULL;
    if (!g_fail_from) g_alloc_count++;
    return malloc(n);
}

KD_TEST(config_out_of_memory_is_eio_never_a_partial_config) {
    const char *text =
        "{\"data\": {\"train\": {\"format\": \"csv\", \"path\": \"a.csv\", \"label_column\": 2},"
        " \"validation\": {\"path\": \"v-ubyte\", \"labels\": \"l\"}, \"classes\": [\"a\", \"b\"],"
        " \"preprocess\": {\"mean\": [0.5], \"std\": [0.2]}, \"augment\": {\"flip\": true}},"
        " \"model\": {\"input\": [4], \"layers\": [{\"type\": \"dense\", \"units\": 2}]},"
        " \"teacher\": {\"checkpoint\": \"t\", \"layers\": [{\"type\": \"dense\", \"units\": 2}]},"
        " \"optimizer\": {\"name\": \"adam\"}, \"schedule\": {\"name\": \"step\", \"step_epochs\": 1}}";
    const char *sets[] = {"train.epochs=4", "optimizer.name=adamw", "model.layers[0].units=2"};
    kd_config c;
    kd_err err;
    cJSON_Hooks hooks = {counting_malloc, free};
    cJSON_InitHooks(&hooks);
    /* Allocations of reading the JSON text itself (a failure there reads as invalid JSON:
     * cJSON does not say why it failed), then of the whole load. */
    g_fail_from = 0, g_alloc_count = 0;
    cJSON_Delete(cJSON_ParseWithLength(text, strlen(text)));
    long n_parse = g_alloc_count;
    g_alloc_count = 0;
    kd_status st = load_text(&c, text, sets, 3, &err);
    long n_total = g_alloc_count;
    char *want = st == KD_OK ? kd_config_to_json(&c) : NULL;
    kd_config_free(&c);
    CHECK_EQ_INT(st, KD_OK);
    CHECK(n_total > n_parse + 50);
    int n_failed = 0;
    for (long k = n_parse + 1; want && k <= n_total + 1; k++) {
        g_fail_from = k, g_alloc_count = 0;
        st = load_text(&c, text, sets, 3, &err);
        g_fail_from = 0;
        if (k <= n_total) {
            if (st != KD_EIO || !strstr(err.msg, "base.json: out of memory") || c.resolved) {
                kd_test_fail(__FILE__, __LINE__, "allocation %ld of %ld failing: status %d: %s", k,
                             n_total, st, st ? err.msg : "(loaded)");
                if (++n_failed > 5) break;
            }
        } else {
            char *got = st == KD_OK ? kd_config_to_json(&c) : NULL;
            CHECK(got && strcmp(got, want) == 0);
            free(got);
        }
        kd_config_free(&c);
    }
    cJSON_InitHooks(NULL);
    free(want);
}
