/* test_config.c - the run configuration: a corpus of broken configs (each must fail with
 * KD_EUSAGE naming the file and the JSON path), values and defaults of good configs, path
 * resolution, --set overrides and the resolved-JSON round trip. */
#define _XOPEN_SOURCE 700 /* realpath */
#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kd_config.h"
#include "kd_test.h"

/* JSON in these tests is written with single quotes and converted, to keep it readable. */
static void write_json(const char *path, const char *sq) {
    size_t n = strlen(sq);
    char *s = malloc(n + 1);
    for (size_t i = 0; i <= n; i++) s[i] = sq[i] == '\'' ? '"' : sq[i];
    if (kd_test_write_file(path, s, n) != 0) kd_test_fail(__FILE__, __LINE__, "cannot write %s", path);
    free(s);
}

static void real_dir(const char *dir, char *out) {
    char *r = realpath(dir, NULL);
    snprintf(out, KD_PATH_MAX, "%s", r ? r : dir);
    free(r);
}

#define DATA "'data': {'train': {'format': 'idx', 'path': 'imgs', 'labels': 'lbls'}}"
#define MODEL "'model': {'layers': [{'type': 'dense', 'units': 10}]}"
#define TEACHER "'teacher': {'checkpoint': 't.safetensors'}"
#define BASE "{" DATA ", " MODEL

typedef struct {
    const char *json;
    const char *set;     /* one --set override, or NULL */
    const char *expect;  /* must appear in the message right after "<file>: " */
} bad_case;

static const bad_case bad_corpus[] = {
    /* unknown keys, with and without a near miss */
    {BASE ", 'optimiser': {}}", NULL, "optimiser: unknown key (did you mean \"optimizer\"?)"},
    {BASE ", 'optimizer': {'lrr': 0.1}}", NULL, "optimizer.lrr: unknown key (did you mean \"lr\"?)"},
    {BASE ", 'optimizer': {'learning_rate': 0.1}}", NULL,
     "optimizer.learning_rate: unknown key (did you mean \"lr\"?)"},
    {BASE ", 'distill': {'temp': 2}, " TEACHER "}", NULL,
     "distill.temp: unknown key (did you mean \"temperature\"?)"},
    {BASE ", 'train': {'btach_size': 2}}", NULL, "train.btach_size: unknown key (did you mean \"batch_size\"?)"},
    {BASE ", 'train': {'zzzzzz': 2}}", NULL, "train.zzzzzz: unknown key (known keys here: epochs, batch_size"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a', 'lables': 'b'}}, " MODEL "}", NULL,
     "data.train.lables: unknown key (did you mean \"labels\"?)"},
    {BASE ", 'optimizer': {'lr': 0.1, 'lr': 0.2}}", NULL, "optimizer.lr: duplicate key"},
    /* wrong types and ranges */
    {BASE ", 'optimizer': {'lr': 'fast'}}", NULL, "optimizer.lr: expected a number > 0, got \"fast\""},
    {BASE ", 'optimizer': {'lr': -0.1}}", NULL, "optimizer.lr: expected a number > 0, got -0.1"},
    {BASE ", 'optimizer': {'lr': 0}}", NULL, "optimizer.lr: expected a number > 0, got 0"},
    {BASE ", 'optimizer': {'momentum': 1}}", NULL, "optimizer.momentum: expected a number in [0, 1), got 1"},
    {BASE ", 'optimizer': 3}", NULL, "optimizer: expected an object (a section), got 3"},
    {BASE ", 'optimizer': {'name': 'adma'}}", NULL,
     "optimizer.name: expected one of \"sgd\", \"adam\", \"adamw\", got \"adma\" (did you mean \"adam\"?)"},
    {BASE ", 'optimizer': {'name': 'adam', 'momentum': 0.9}}", NULL,
     "optimizer.momentum: not used by optimizer \"adam\""},
    {BASE ", 'optimizer': {'nesterov': true}}", NULL, "optimizer.nesterov: needs optimizer.momentum > 0"},
    {BASE ", 'optimizer': {'weight_decay': -1}}", NULL, "optimizer.weight_decay: expected a number >= 0"},
    {BASE ", " TEACHER ", 'distill': {'temperature': 0}}", NULL,
     "distill.temperature: expected a number > 0, got 0"},
    {BASE ", " TEACHER ", 'distill': {'temperature': -2}}", NULL, "distill.temperature: expected a number > 0"},
    {BASE ", " TEACHER ", 'distill': {'alpha': 1.5}}", NULL,
     "distill.alpha: expected a number in [0, 1], got 1.5"},
    {BASE ", " TEACHER ", 'distill': {'alpha': -0.1}}", NULL, "distill.alpha: expected a number in [0, 1]"},
    {BASE ", " TEACHER ", 'distill': {'kind': 'mse', 'temperature': 2}}", NULL,
     "distill.temperature: not used by kind \"mse\""},
    {BASE ", 'train': {'epochs': 0}}", NULL, "train.epochs: expected an integer in [1, 1000000], got 0"},
    {BASE ", 'train': {'batch_size': 0}}", NULL, "train.batch_size: expected an integer in [1, 1048576], got 0"},
    {BASE ", 'train': {'batch_size': 2.5}}", NULL, "train.batch_size: expected an integer"},
    {BASE ", 'train': {'seed': -1}}", NULL, "train.seed: expected an integer in [0, 2^53)"},
    {BASE ", 'train': {'threads': '2'}}", NULL, "train.threads: expected an integer in [0, 1024]"},
    {BASE ", 'output': {'save_best': 1}}", NULL, "output.save_best: expected true or false, got 1"},
    {BASE ", 'output': {'dir': ''}}", NULL, "output.dir: expected a non-empty string"},
    /* schedule */
    {BASE ", 'schedule': {'name': 'step'}}", NULL, "schedule.step_size: missing"},
    {BASE ", 'schedule': {'name': 'step', 'step_size': 0}}", NULL, "schedule.step_size: expected an integer >= 1"},
    {BASE ", 'schedule': {'name': 'step', 'step_size': 5, 'step_epochs': 1}}", NULL,
     "schedule.step_size: give step_size or step_epochs, not both"},
    {BASE ", 'schedule': {'gamma': 0.5}}", NULL, "schedule.gamma: not used by schedule \"constant\""},
    {BASE ", 'schedule': {'name': 'cosine', 'min_lr': 1}}", NULL, "schedule.min_lr: must not exceed optimizer.lr"},
    /* required things missing */
    {"{" MODEL "}", NULL, "data: missing (required section"},
    {"{'data': {}, " MODEL "}", NULL, "data.train: missing (required"},
    {"{'data': {'train': {'format': 'idx'}}, " MODEL "}", NULL, "data.train.path: missing (required"},
    {"{'data': {'train': {'path': 'folder'}}, " MODEL "}", NULL, "data.train.format: missing, and \"folder\""},
    {"{" DATA "}", NULL, "model: missing"},
    {"{" DATA ", 'model': {}}", NULL, "model.layers: missing"},
    {"{" DATA ", 'model': {'layers': {'type': 'relu'}}}", NULL, "model.layers: expected an array of layer objects"},
    {"{" DATA ", 'model': {'layers': []}}", NULL, "model.layers: empty"},
    {"{" DATA ", 'model': {'layers': [{'type': 'dense', 'units': 3}, {'units': 3}]}}", NULL,
     "model.layers[1].type: missing"},
    {"{" DATA ", 'model': {'layers': [7]}}", NULL, "model.layers[0]: expected a layer object"},
    {"{" DATA ", 'model': {'layers': [{'type': 'relu'}], 'input': [1, 0]}}", NULL,
     "model.input[1]: expected an integer in [1, 2^24], got 0"},
    {BASE ", 'teacher': {}}", NULL, "teacher.checkpoint: missing"},
    {BASE ", 'teacher': {'checkpoint': 't', 'layers': 3}}", NULL, "teacher.layers: expected an array"},
    /* ensembles and the cache */
    {BASE ", 'teacher': {'checkpoint': 't', 'ensemble': [{'checkpoint': 'a'}]}}", NULL,
     "teacher.checkpoint: give teacher.checkpoint or teacher.ensemble, not both"},
    {BASE ", 'teacher': {'ensemble': []}}", NULL, "teacher.ensemble: empty"},
    {BASE ", 'teacher': {'ensemble': {'checkpoint': 'a'}}}", NULL,
     "teacher.ensemble: expected a list of teachers"},
    {BASE ", 'teacher': {'ensemble': [{'weight': 1}]}}", NULL, "teacher.ensemble[0].checkpoint: missing"},
    {BASE ", 'teacher': {'ensemble': [{'checkpoint': 'a'}, {'checkpoint': 'b', 'weight': 0}]}}",
     NULL, "teacher.ensemble[1].weight: expected a number > 0, got 0"},
    {BASE ", 'teacher': {'ensemble': [{'checkpoint': 'a', 'wieght': 2}]}}", NULL,
     "teacher.ensemble[0].wieght: unknown key (did you mean \"weight\"?)"},
    {BASE ", 'teacher': {'ensemble': [{'checkpoint': 'a'}], 'layers': [{'type': 'relu'}]}}", NULL,
     "teacher.layers: with teacher.ensemble, give each teacher's layers in its own entry"},
    {BASE ", 'teacher': {'ensemble': [{'checkpoint': 'a'}, {'checkpoint': 'b'}]}, "
     "'distill': {'kind': 'mse'}}", NULL, "distill.kind: \"mse\" matches one teacher's logits"},
    {BASE ", 'teacher': {'checkpoint': 't', 'cache': {}}}", NULL, "teacher.cache.path: missing"},
    {BASE ", 'teacher': {'checkpoint': 't', 'cache': {'path': 'c', 'views': 2}}}", NULL,
     "teacher.cache.views: 2 views need data.augment"},
    {"{'data': {'train': {'format': 'idx', 'path': 'i'}, 'augment': {'shift': 1}}, " MODEL
     ", 'teacher': {'checkpoint': 't', 'cache': {'path': 'c'}}}", NULL,
     "teacher.cache.views: 1 view, but data.augment is on"},
    {BASE ", 'teacher': {'checkpoint': 't', 'cache': {'path': 'c', 'dtype': 'f64'}}}", NULL,
     "teacher.cache.dtype: expected"},
    {BASE ", 'teacher': {'checkpoint': 't', 'cache': {'path': 'c', 'top_k': 2}}, "
     "'distill': {'kind': 'mse'}}", NULL, "teacher.cache.top_k: \"mse\" matches every logit"},
    /* data details */
    {"{'data': {'train': {'format': 'csv', 'path': 'a.csv', 'labels': 'b'}}, " MODEL "}", NULL,
     "data.train.labels: not used by format \"csv\""},
    {"{'data': {'train': {'format': 'csv', 'path': 'a.csv', 'delimiter': ',,'}}, " MODEL "}", NULL,
     "data.train.delimiter: expected one character"},
    {"{'data': {'train': {'format': 'images', 'path': 'd', 'channels': 2}}, " MODEL "}", NULL,
     "data.train.channels: expected 1 (grey) or 3 (RGB), 0: the first image's, got 2"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a', 'subset_seed': 3}}, " MODEL "}", NULL,
     "data.train.subset_seed: needs a subset > 0"},
    {"{'data': {'train': {'format': 'tar', 'path': 'a'}}, " MODEL "}", NULL,
     "data.train.format: expected one of \"idx\", \"csv\", \"images\", got \"tar\""},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'validation_split': 1.5}, " MODEL "}", NULL,
     "data.validation_split: expected a fraction in [0, 1) or a whole number"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'validation_split': 0.2, "
     "'validation': {'format': 'idx', 'path': 'v'}}, " MODEL "}", NULL,
     "data.validation_split: not allowed together with data.validation"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'preprocess': {'mean': [0.5], 'std': [0.2, 0.3]}}, " MODEL "}",
     NULL, "data.preprocess.std: has 2 values but mean has 1"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'preprocess': {'mean': [0.5], 'std': [0]}}, " MODEL "}",
     NULL, "data.preprocess.std[0]: expected a number > 0, got 0"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'preprocess': {'mean': 0.5, 'std': 0}}, " MODEL "}",
     NULL, "data.preprocess.std: expected a number > 0 or an array of them"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'preprocess': {'mean': 0.5}}, " MODEL "}",
     NULL, "data.preprocess.std: missing (required with mean)"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'preprocess': {'scale': 0}}, " MODEL "}",
     NULL, "data.preprocess.scale: expected a number > 0 or \"auto\", got 0"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'augment': {'shift': -1}}, " MODEL "}",
     NULL, "data.augment.shift: expected an integer in [0, 64], got -1"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'augment': {'shift': 2.5}}, " MODEL "}",
     NULL, "data.augment.shift: expected an integer in [0, 64], got 2.5"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'augment': {'shift': 65}}, " MODEL "}",
     NULL, "data.augment.shift: expected an integer in [0, 64], got 65"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'augment': {'flip': 'yes'}}, " MODEL "}",
     NULL, "data.augment.flip: expected true or false"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'augment': {'rotate': 10}}, " MODEL "}",
     NULL, "data.augment.rotate: unknown key"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'augment': 2}, " MODEL "}",
     NULL, "data.augment: expected an object"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'classes': 'cat'}, " MODEL "}", NULL,
     "data.classes: expected a non-empty array of class names, got \"cat\""},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'classes': ['cat', 3]}, " MODEL "}", NULL,
     "data.classes[1]: expected a non-empty string, got 3"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'classes': ['cat', 'dog', 'cat']}, " MODEL "}",
     NULL, "data.classes[2]: \"cat\" is listed twice"},
    /* cross-field rules */
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'use_labels': false}, " MODEL "}", NULL,
     "data.use_labels: false needs a teacher section"},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'use_labels': false}, " MODEL ", " TEACHER
     ", 'distill': {'alpha': 0.5}}", NULL, "distill.alpha: must be 1 when data.use_labels is false"},
    {BASE ", 'distill': {'alpha': 0.5}}", NULL, "distill: given, but there is no teacher section"},
    /* the top level */
    {"[1, 2]", NULL, "expected a JSON object at the top level, got an array"},
    /* overrides: same paths, same checks, blamed on the --set */
    {BASE "}", "optimizer.lrr=0.1", "optimizer.lrr: unknown key (did you mean \"lr\"?) (from --set optimizer.lrr=0.1)"},
    {BASE "}", "trian.epochs=3", "trian: unknown key (did you mean \"train\"?)"},
    {BASE "}", "optimizer.lr=fast", "optimizer.lr: expected a number > 0, got \"fast\" (from --set optimizer.lr=fast)"},
    {BASE "}", "train.epochs=-3", "train.epochs: expected an integer in [1, 1000000], got -3 (from --set"},
    {BASE "}", "optimizer.lr", "--set optimizer.lr: expected PATH=VALUE"},
    {BASE "}", "optimizer.lr.x=1", "optimizer.lr: is a value, not a section"},
    {BASE "}", "model.layers[5].units=3", "model.layers[5]: index out of range (the list has 1 entries)"},
    {BASE "}", "train[0]=3", "train: is not a list"},
    {BASE ", 'train': {'epochs': 3}}", "train=5", "train: expected an object (a section), got 5 (from --set train=5)"},
    {BASE "}", "model.layers[0].type=null", "model.layers[0].type: missing (every layer needs a \"type\") (from --set"},
    /* messages built from the key table: variant lists, alternatives, cross-key paths */
    {BASE ", 'optimizer': {'beta1': 0.8}}", NULL,
     "optimizer.beta1: not used by optimizer \"sgd\" (only by \"adam\" and \"adamw\")"},
    {BASE ", 'schedule': {'name': 'step', 'step_size': 3, 'min_lr': 0}}", NULL,
     "schedule.min_lr: not used by schedule \"step\" (only by \"cosine\")"},
    {BASE ", 'schedule': {'warmup_epochs': 1, 'warmup_steps': 3}}", NULL,
     "schedule.warmup_steps: give warmup_steps or warmup_epochs, not both"},
    {BASE ", 'schedule': {'warmup_epochs': 0, 'warmup_steps': 3}}", NULL,
     "schedule.warmup_steps: give warmup_steps or warmup_epochs, not both"},
    {BASE ", 'schedule': {'warmup_epochs': -1}}", NULL,
     "schedule.warmup_epochs: expected a number of epochs >= 0, got -1"},
    {BASE ", 'schedule': {'name': 'step', 'step_epochs': 0}}", NULL,
     "schedule.step_epochs: expected a number of epochs > 0, got 0"},
    {"{'data': {'train': {'path': 'folder'}}, " MODEL "}", NULL,
     "data.train.format: missing, and \"folder\" does not tell (give \"idx\", \"csv\" or \"images\")"},
    {"{'data': {'train': {'format': 'images'}}, " MODEL "}", NULL,
     "data.train.path: missing (required: the image file or folder)"},
    {"{'data': {'train': {'path': 'a.csv'}, 'validation': {'path': 'v.csv', 'width': 3}}, " MODEL "}",
     NULL, "data.validation.width: not used by format \"csv\""},
    {"{'data': {'train': {'format': 'idx', 'path': 'a'}, 'preprocess': {'std': [1]}}, " MODEL "}",
     NULL, "data.preprocess.mean: missing (required with std)"},
    {BASE "}", "optimizer[0]=3", "optimizer: is not a list ([N] only indexes model.layers, teacher.layers, "
     "teacher.ensemble and distill.losses)"},
    {BASE ", 'output': {'dir': 3}}", NULL, "output.dir: expected a non-empty string, got 3"},
};

KD_TEST(config_bad_corpus_names_file_and_path) {
    const char *dir = kd_test_tmpdir();
    char path[KD_PATH_MAX], want[1024];
    snprintf(path, sizeof path, "%s/bad.json", dir);
    size_t n = sizeof bad_corpus / sizeof bad_corpus[0];
    CHECK(n >= 20);
    for (size_t i = 0; i < n; i++) {
        const bad_case *bc = &bad_corpus[i];
        write_json(path, bc->json);
        kd_config c;
        kd_err err;
        kd_err_clear(&err);
        const char *sets[1] = {bc->set};
        kd_status st = kd_config_load(&c, path, sets, bc->set ? 1 : 0, &err);
        if (st != KD_EUSAGE)
            kd_test_fail(__FILE__, __LINE__, "case %zu: status %d, want %d (msg: %s)", i, st,
                         KD_EUSAGE, err.msg);
        CHECK_EQ_INT(err.code, KD_EUSAGE);
        snprintf(want, sizeof want, "%s: %s", path, bc->expect);
        if (!strstr(err.msg, want))
            kd_test_fail(__FILE__, __LINE__, "case %zu:\n  expected: %s\n  got:      %s", i, want, err.msg);
        /* A failed load leaves nothing behind to free or misuse. */
        CHECK(c.layers == NULL && c.resolved == NULL && c.teachers[0].layers == NULL);
        kd_config_free(&c);
    }
}

KD_TEST(config_missing_file_and_invalid_json) {
    const char *dir = kd_test_tmpdir();
    char path[KD_PATH_MAX];
    kd_config c;
    kd_err err;

    snprintf(path, sizeof path, "%s/nope.json", dir);
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "No such file");

    /* The stray comma sits on line 3, column 14. */
    snprintf(path, sizeof path, "%s/broken.json", dir);
    write_json(path, "{\n  'data': {\n    'train': , 'x': 1}\n}\n");
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, path);
    CHECK_CONTAINS(err.msg, "line 3, column 14: invalid JSON near \", \"x\": 1}\"");

    write_json(path, "{\n  'data': {\n");
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "line 3");
    CHECK_CONTAINS(err.msg, "unexpected end of file");

    write_json(path, "{}\n\n  {}");
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "line 3, column 3: invalid JSON: unexpected text after the end");

    write_json(path, "");
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "line 1, column 1");
    kd_config_free(&c);
}

KD_TEST(config_full_values_and_relative_paths) {
    const char *tmp = kd_test_tmpdir();
    char dir[KD_PATH_MAX], real[KD_PATH_MAX], path[KD_PATH_MAX], want[KD_PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/cfgs", tmp);
    CHECK(mkdir(dir, 0700) == 0);
    real_dir(tmp, real);
    snprintf(path, sizeof path, "%s/full.json", dir);
    write_json(path,
               "{'data': {"
               "  'train': {'format': 'csv', 'path': '../data/./train.csv', 'label_column': 'y',"
               "            'header': true, 'delimiter': ';', 'subset': 500, 'subset_seed': 9},"
               "  'test': {'format': 'images', 'path': '/abs/test', 'channels': 3, 'height': 32,"
               "           'width': 30, 'skip_bad': true},"
               "  'validation_split': 1000,"
               "  'preprocess': {'scale': 0.5, 'mean': [0.1, 0.2, 0.3], 'std': [1, 2, 4], 'flatten': true}},"
               " 'model': {'input': [3, 32, 30], 'layers': [{'type': 'flatten'}, {'type': 'dense', 'units': 7}],"
               "           'init': 'xavier'},"
               " 'teacher': {'checkpoint': 'teach/t.safetensors', 'layers': [{'type': 'dense', 'units': 7}]},"
               " 'distill': {'kind': 'kl', 'temperature': 2.5, 'alpha': 0.25},"
               " 'optimizer': {'name': 'adamw', 'lr': 0.003, 'beta1': 0.8, 'beta2': 0.99, 'eps': 1e-6,"
               "               'weight_decay': 0.05, 'clip_norm': 5},"
               " 'schedule': {'name': 'cosine', 'warmup_epochs': 0.5, 'min_lr': 0.0001},"
               " 'train': {'epochs': 7, 'batch_size': 64, 'seed': 12345678901, 'threads': 2},"
               " 'output': {'dir': 'out/here', 'save_best': false}}");
    kd_config c;
    kd_err err;
    kd_err_clear(&err);
    kd_status st = kd_config_load(&c, path, NULL, 0, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    CHECK(strcmp(c.name, "full") == 0);
    CHECK_EQ_INT(c.train.format, KD_FMT_CSV);
    snprintf(want, sizeof want, "%s/data/train.csv", real);
    CHECK(strcmp(c.train.path, want) == 0);
    CHECK(strcmp(c.train.label_column, "y") == 0);
    CHECK_EQ_INT(c.train.has_header, 1);
    CHECK_EQ_INT(c.train.delimiter, ';');
    CHECK_EQ_INT(c.train.subset, 500);
    CHECK_EQ_INT(c.train.subset_seeded, 1);
    CHECK_EQ_INT(c.train.subset_seed, 9);
    CHECK_EQ_INT(c.has_test, 1);
    CHECK_EQ_INT(c.test.format, KD_FMT_IMAGES);
    CHECK(strcmp(c.test.path, "/abs/test") == 0);
    CHECK_EQ_INT(c.test.channels, 3);
    CHECK_EQ_INT(c.test.height, 32);
    CHECK_EQ_INT(c.test.width, 30);
    CHECK_EQ_INT(c.test.skip_bad, 1);
    CHECK_EQ_INT(c.has_val_source, 0);
    CHECK_EQ_INT(c.val_count, 1000);
    CHECK_CLOSE(c.val_fraction, 0, 0, 0);
    CHECK_EQ_INT(c.use_labels, 1);
    CHECK_CLOSE(c.pp.scale, 0.5, 0, 0);
    CHECK_EQ_INT(c.pp.n_channels, 3);
    CHECK_CLOSE(c.pp.mean[2], 0.3f, 0, 0);
    CHECK_CLOSE(c.pp.std[2], 4, 0, 0);
    CHECK_EQ_INT(c.pp.flatten, 1);
    CHECK_EQ_INT(c.has_input, 1);
    CHECK_EQ_INT(c.input.rank, 3);
    CHECK_EQ_INT(c.input.d[0], 3);
    CHECK_EQ_INT(c.input.d[2], 30);
    CHECK_EQ_INT(cJSON_GetArraySize(c.layers), 2);
    CHECK_EQ_INT(c.init, KD_INIT_XAVIER);
    CHECK_EQ_INT(c.has_teacher, 1);
    snprintf(want, sizeof want, "%s/cfgs/teach/t.safetensors", real);
    CHECK(strcmp(c.teachers[0].path, want) == 0);
    CHECK(c.teachers[0].layers && cJSON_GetArraySize(c.teachers[0].layers) == 1);
    CHECK_EQ_INT(c.distill.kind, KD_DISTILL_KL);
    CHECK_CLOSE(c.distill.temperature, 2.5, 0, 0);
    CHECK_CLOSE(c.distill.alpha, 0.25, 0, 0);
    CHECK_EQ_INT(c.optim.kind, KD_OPT_ADAMW);
    CHECK_CLOSE(c.sched.base_lr, 0.003f, 0, 0);
    CHECK_CLOSE(c.optim.beta1, 0.8f, 0, 0);
    CHECK_CLOSE(c.optim.beta2, 0.99f, 0, 0);
    CHECK_CLOSE(c.optim.eps, 1e-6f, 0, 0);
    CHECK_CLOSE(c.optim.weight_decay, 0.05f, 0, 0);
    CHECK_CLOSE(c.optim.clip_norm, 5, 0, 0);
    CHECK_EQ_INT(c.sched.kind, KD_SCHED_COSINE);
    CHECK_CLOSE(c.sched.min_lr, 0.0001f, 0, 0);
    CHECK_CLOSE(c.warmup_epochs, 0.5, 0, 0);
    CHECK_EQ_INT(c.epochs, 7);
    CHECK_EQ_INT(c.batch_size, 64);
    CHECK(c.seed == 12345678901ull);
    CHECK_EQ_INT(c.threads, 2);
    /* output.dir follows the current directory, not the config's. */
    char cwd[KD_PATH_MAX];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(want, sizeof want, "%s/out/here", cwd);
    CHECK(strcmp(c.out_dir, want) == 0);
    CHECK_EQ_INT(c.save_best, 0);

    /* Steps: 0.5 epochs of 40 steps warm up for 20; cosine runs to 7 * 40. */
    kd_sched_cfg s = kd_config_sched(&c, 40);
    CHECK_EQ_INT(s.warmup_steps, 20);
    CHECK_EQ_INT(s.total_steps, 280);
    CHECK_CLOSE(s.base_lr, 0.003f, 0, 0);
    kd_config_free(&c);
    CHECK(c.layers == NULL);
    kd_config_free(NULL);
}

KD_TEST(config_defaults) {
    const char *dir = kd_test_tmpdir();
    char path[KD_PATH_MAX], cwd[KD_PATH_MAX], want[KD_PATH_MAX + 64];
    snprintf(path, sizeof path, "%s/tiny-run.json", dir);
    write_json(path, "{'data': {'train': {'path': 'train-images-idx3-ubyte.gz'}}, " MODEL "}");
    kd_config c;
    kd_err err;
    kd_status st = kd_config_load(&c, path, NULL, 0, &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    CHECK_EQ_INT(c.train.format, KD_FMT_IDX);  /* inferred from the name */
    CHECK(c.train.labels_path[0] == '\0');
    CHECK_EQ_INT(c.train.subset, 0);
    CHECK_EQ_INT(c.train.subset_seeded, 0);
    CHECK_EQ_INT(c.has_test, 0);
    CHECK_EQ_INT(c.has_val_source, 0);
    CHECK_EQ_INT(c.val_count, 0);
    CHECK_CLOSE(c.val_fraction, 0.1f, 0, 0);
    CHECK_EQ_INT(c.use_labels, 1);
    CHECK_CLOSE(c.pp.scale, 0, 0, 0);
    CHECK_EQ_INT(c.pp.n_channels, 0);
    CHECK_EQ_INT(c.pp.flatten, 0);
    CHECK_EQ_INT(c.has_input, 0);
    CHECK_EQ_INT(c.init, KD_INIT_HE);
    CHECK_EQ_INT(c.has_teacher, 0);
    CHECK_EQ_INT(c.optim.kind, KD_OPT_SGD);
    CHECK_CLOSE(c.sched.base_lr, 0.01f, 0, 0);
    CHECK_CLOSE(c.optim.momentum, 0, 0, 0);
    CHECK_EQ_INT(c.optim.nesterov, 0);
    CHECK_CLOSE(c.optim.weight_decay, 0, 0, 0);
    CHECK_CLOSE(c.optim.clip_norm, 0, 0, 0);
    CHECK_EQ_INT(c.sched.kind, KD_SCHED_CONSTANT);
    CHECK_EQ_INT(c.sched.warmup_steps, 0);
    CHECK_EQ_INT(c.epochs, 10);
    CHECK_EQ_INT(c.batch_size, 128);
    CHECK_EQ_INT(c.seed, 0);
    CHECK_EQ_INT(c.threads, 0);
    CHECK_EQ_INT(c.save_best, 1);
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    snprintf(want, sizeof want, "%s/runs/tiny-run", cwd);
    CHECK(strcmp(c.out_dir, want) == 0);
    kd_config_free(&c);

    /* A teacher without a distill section gets the documented defaults; without labels alpha
     * defaults to 1 (the only legal value there). */
    write_json(path, "{'data': {'train': {'path': 'x.csv'}}, " MODEL ", " TEACHER "}");
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_OK);
    CHECK_EQ_INT(c.train.format, KD_FMT_CSV);
    CHECK_EQ_INT(c.train.has_header, -1);
    CHECK_EQ_INT(c.train.delimiter, ',');
    CHECK_EQ_INT(c.has_teacher, 1);
    CHECK_EQ_INT(c.distill.kind, KD_DISTILL_KL);
    CHECK_CLOSE(c.distill.temperature, 4, 0, 0);
    CHECK_CLOSE(c.distill.alpha, 0.9f, 0, 0);
    kd_config_free(&c);
    write_json(path, "{'data': {'train': {'format': 'images', 'path': 'imgs', 'unlabeled': true},"
                     " 'use_labels': false}, " MODEL ", " TEACHER "}");
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_OK);
    CHECK_EQ_INT(c.use_labels, 0);
    CHECK_CLOSE(c.distill.alpha, 1, 0, 0);
    CHECK_EQ_INT(c.train.unlabeled, 1);
    /* 0: the image folder's first image gives them (src/data/imagefolder.c). */
    CHECK_EQ_INT(c.train.channels, 0);
    CHECK_EQ_INT(c.train.height, 0);
    kd_config_free(&c);

    /* adam's default learning rate differs from sgd's, like torch's. */
    write_json(path, BASE ", 'optimizer': {'name': 'adam'}, 'schedule': {'name': 'step', 'step_epochs': 2}}");
    CHECK_EQ_INT(kd_config_load(&c, path, NULL, 0, &err), KD_OK);
    CHECK_CLOSE(c.sched.base_lr, 0.001f, 0, 0);
    CHECK_CLOSE(c.optim.beta2, 0.999f, 0, 0);
    CHECK_CLOSE(c.sched.gamma, 0.1f, 0, 0);
    kd_sched_cfg s = kd_config_sched(&c, 30);
    CHECK_EQ_INT(s.step_size, 60);
    CHECK_EQ_INT(s.total_steps, 300);
    kd_config_free(&c);
}

KD_TEST(config_overrides) {
    const char *dir = kd_test_tmpdir();
    char path[KD_PATH_MAX], real[KD_PATH_MAX], want[KD_PATH_MAX + 64];
    real_dir(dir, real);
    snprintf(path, sizeof path, "%s/ov.json", dir);
    write_json(path, BASE ", 'train': {'epochs': 3}}");
    const char *sets[] = {
        "train.epochs=5",
        "optimizer.name=adam",            /* not JSON: taken as a string */
        "optimizer.lr=0.25",
        "teacher.checkpoint=t/x.st",      /* creates the section; resolved like a file value */
        "distill.alpha=1",
        "model.layers[0].units=64",
        "train.epochs=6",                 /* the later --set wins */
        "data.train.subset=100",
        "output.dir=/tmp/kd-abs-out",
    };
    kd_config c;
    kd_err err;
    kd_status st = kd_config_load(&c, path, sets, sizeof sets / sizeof sets[0], &err);
    CHECK_EQ_INT(st, KD_OK);
    if (st) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    CHECK_EQ_INT(c.epochs, 6);
    CHECK_EQ_INT(c.optim.kind, KD_OPT_ADAM);
    CHECK_CLOSE(c.sched.base_lr, 0.25, 0, 0);
    CHECK_EQ_INT(c.has_teacher, 1);
    snprintf(want, sizeof want, "%s/t/x.st", real);
    CHECK(strcmp(c.teachers[0].path, want) == 0);
    CHECK_CLOSE(c.distill.alpha, 1, 0, 0);
    CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetArrayItem(c.layers, 0), "units")->valueint, 64);
    CHECK_EQ_INT(c.train.subset, 100);
    CHECK(strcmp(c.out_dir, "/tmp/kd-abs-out") == 0);
    kd_config_free(&c);

    /* null removes a key: a distillation config becomes its scratch twin. */
    write_json(path, BASE ", " TEACHER ", 'distill': {'alpha': 0.5}, 'optimizer': {'lr': 0.2}}");
    const char *scratch[] = {"teacher=null", "distill=null", "optimizer.lr=null"};
    CHECK_EQ_INT(kd_config_load(&c, path, scratch, 3, &err), KD_OK);
    CHECK_EQ_INT(c.has_teacher, 0);
    CHECK_CLOSE(c.sched.base_lr, 0.01f, 0, 0);
    CHECK(cJSON_GetObjectItem(c.resolved, "teacher") == NULL);
    kd_config_free(&c);

    /* A JSON value replaces a whole section; a quoted number stays a string (and fails). */
    const char *whole[] = {"optimizer={\"name\": \"sgd\", \"momentum\": 0.9, \"nesterov\": true}"};
    CHECK_EQ_INT(kd_config_load(&c, path, whole, 1, &err), KD_OK);
    CHECK_CLOSE(c.optim.momentum, 0.9f, 0, 0);
    CHECK_EQ_INT(c.optim.nesterov, 1);
    CHECK_CLOSE(c.sched.base_lr, 0.01f, 0, 0);
    kd_config_free(&c);
    const char *quoted[] = {"train.epochs=\"4\""};
    CHECK_EQ_INT(kd_config_load(&c, path, quoted, 1, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "train.epochs: expected an integer in [1, 1000000], got \"4\"");
}

KD_TEST(config_resolved_json_round_trips) {
    const char *tmp = kd_test_tmpdir();
    char a_dir[KD_PATH_MAX], b_dir[KD_PATH_MAX], path[KD_PATH_MAX], path2[KD_PATH_MAX];
    snprintf(a_dir, sizeof a_dir, "%s/a", tmp);
    snprintf(b_dir, sizeof b_dir, "%s/b/deeper", tmp);
    CHECK(mkdir(a_dir, 0700) == 0);
    snprintf(path, sizeof path, "%s/b", tmp);
    CHECK(mkdir(path, 0700) == 0);
    CHECK(mkdir(b_dir, 0700) == 0);
    static const char *const configs[] = {
        "{'data': {'train': {'format': 'idx', 'path': 'imgs.gz', 'labels': 'lbls.gz', 'subset': 10,"
        " 'subset_seed': 4}, 'test': {'format': 'csv', 'path': 't.csv', 'header': false,"
        " 'label_column': -1, 'delimiter': '\\t'}, 'validation_split': 0.15,"
        " 'preprocess': {'mean': 0.2860, 'std': 0.3530}},"
        " 'model': {'layers': [{'type': 'dense', 'units': 1200}, {'type': 'relu'},"
        "  {'type': 'dropout', 'p': 0.3}, {'type': 'dense', 'units': 10}]},"
        " 'teacher': {'checkpoint': '../runs/fmnist-teacher/best.safetensors'},"
        " 'distill': {'temperature': 3.3, 'alpha': 0.7},"
        " 'optimizer': {'name': 'sgd', 'lr': 0.01, 'momentum': 0.9, 'nesterov': true, 'weight_decay': 5e-4},"
        " 'schedule': {'name': 'step', 'warmup_steps': 10, 'step_size': 1000, 'gamma': 0.3},"
        " 'train': {'epochs': 20, 'batch_size': 100, 'seed': 7}}",
        "{'data': {'train': {'format': 'images', 'path': 'img', 'channels': 3, 'height': 16, 'width': 16},"
        " 'validation': {'format': 'images', 'path': 'val', 'channels': 3, 'height': 16, 'width': 16},"
        " 'preprocess': {'scale': 0.00392156863, 'mean': [0.5, 0.4, 0.3], 'std': [0.2, 0.2, 0.25], 'flatten': true},"
        " 'use_labels': false},"
        " 'model': {'input': [3, 16, 16], 'layers': [{'type': 'dense', 'units': 10}], 'init': 'xavier'},"
        " 'teacher': {'checkpoint': '/abs/t.safetensors', 'layers': [{'type': 'dense', 'units': 10}]},"
        " 'distill': {'kind': 'mse'},"
        " 'optimizer': {'name': 'adam', 'lr': 3e-4, 'clip_norm': 1.5},"
        " 'schedule': {'name': 'cosine', 'warmup_epochs': 1, 'min_lr': 1e-6}}",
        "{'data': {'train': {'format': 'idx', 'path': 'x'}, 'validation_split': 0}, " MODEL "}",
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        snprintf(path, sizeof path, "%s/run%zu.json", a_dir, i);
        write_json(path, configs[i]);
        kd_config c1, c2;
        kd_err err;
        kd_status st = kd_config_load(&c1, path, NULL, 0, &err);
        if (st) {
            kd_test_fail(__FILE__, __LINE__, "config %zu: %s", i, err.msg);
            continue;
        }
        char *j1 = kd_config_to_json(&c1);
        CHECK(j1 != NULL);
        /* Saved elsewhere (as a run folder would hold it), it must mean the same thing. */
        snprintf(path2, sizeof path2, "%s/config.json", b_dir);
        CHECK(kd_test_write_file(path2, j1, strlen(j1)) == 0);
        st = kd_config_load(&c2, path2, NULL, 0, &err);
        if (st) {
            kd_test_fail(__FILE__, __LINE__, "config %zu reloaded: %s\n%s", i, err.msg, j1);
            free(j1);
            kd_config_free(&c1);
            continue;
        }
        char *j2 = kd_config_to_json(&c2);
        if (!j2 || strcmp(j1, j2) != 0)
            kd_test_fail(__FILE__, __LINE__, "config %zu: round trip differs:\n%s\n---\n%s", i, j1,
                         j2 ? j2 : "(null)");
        /* The struct, field by field where it matters (the JSON could agree on a wrong value). */
        CHECK(strcmp(c1.train.path, c2.train.path) == 0);
        CHECK(strcmp(c1.train.labels_path, c2.train.labels_path) == 0);
        CHECK(strcmp(c1.teachers[0].path, c2.teachers[0].path) == 0);
        CHECK(strcmp(c1.out_dir, c2.out_dir) == 0);
        CHECK(memcmp(&c1.pp, &c2.pp, sizeof c1.pp) == 0);
        CHECK(memcmp(&c1.optim, &c2.optim, sizeof c1.optim) == 0);
        CHECK(memcmp(&c1.sched, &c2.sched, sizeof c1.sched) == 0);
        CHECK(memcmp(&c1.distill, &c2.distill, sizeof c1.distill) == 0);
        CHECK(memcmp(&c1.test, &c2.test, sizeof c1.test) == 0);
        CHECK(memcmp(&c1.val, &c2.val, sizeof c1.val) == 0);
        CHECK(c1.val_count == c2.val_count && c1.val_fraction == c2.val_fraction);
        CHECK(c1.warmup_epochs == c2.warmup_epochs && c1.step_epochs == c2.step_epochs);
        CHECK(c1.epochs == c2.epochs && c1.batch_size == c2.batch_size && c1.seed == c2.seed);
        CHECK(c1.use_labels == c2.use_labels && c1.has_teacher == c2.has_teacher);
        CHECK(cJSON_Compare(c1.layers, c2.layers, 1));
        if (i == 0) {
            /* The relative teacher path went through ".." against the config directory. */
            char real[KD_PATH_MAX], want[KD_PATH_MAX + 64];
            real_dir(tmp, real);
            snprintf(want, sizeof want, "%s/runs/fmnist-teacher/best.safetensors", real);
            CHECK(strcmp(c2.teachers[0].path, want) == 0);
            CHECK_CONTAINS(j1, "\"lr\":\t0.01,");  /* floats print as written, not 0.00999... */
            CHECK_CONTAINS(j1, "\"label_column\":\t\"-1\"");
            CHECK_EQ_INT(c2.test.delimiter, '\t');
            CHECK_EQ_INT(c2.train.subset_seed, 4);
        }
        if (i == 2) CHECK(c2.val_fraction == 0 && c2.val_count == 0);
        free(j1);
        free(j2);
        kd_config_free(&c1);
        kd_config_free(&c2);
    }
}

/* schedule.warmup_epochs 0 means no warm-up, like warmup_steps 0: accepted, no warm-up steps,
 * and the resolved config (where it reads warmup_steps: 0) gives the same schedule. */
KD_TEST(config_warmup_epochs_zero_means_no_warmup) {
    const char *text = "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"x\"}},"
                       " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 10}]},"
                       " \"schedule\": {\"name\": \"cosine\", \"warmup_epochs\": 0}}";
    kd_config c = {0}, again = {0};
    kd_err err;
    CHECK_EQ_INT(kd_config_parse(&c, text, strlen(text), NULL, "/base", NULL, 0, &err), KD_OK);
    if (kd_test_failed_now()) {
        kd_test_fail(__FILE__, __LINE__, "%s", err.msg);
        return;
    }
    kd_sched_cfg s = kd_config_sched(&c, 30);
    CHECK_EQ_INT(s.warmup_steps, 0);
    CHECK_EQ_INT(s.kind, KD_SCHED_COSINE);
    CHECK_EQ_INT(s.total_steps, 300);
    /* The first step runs at the full rate: no ramp from lr / warmup. */
    CHECK_CLOSE(kd_sched_lr(&s, 0), c.sched.base_lr, 1e-9, 1e-6);
    char *json = kd_config_to_json(&c);
    CHECK(json != NULL);
    CHECK_CONTAINS(json, "\"warmup_steps\":\t0,");
    CHECK_EQ_INT(kd_config_parse(&again, json, strlen(json), NULL, "/base", NULL, 0, &err), KD_OK);
    CHECK_EQ_INT(kd_config_sched(&again, 30).warmup_steps, 0);
    free(json);
    kd_config_free(&c);
    kd_config_free(&again);
}

KD_TEST(config_parse_from_text) {
    kd_config c;
    kd_err err;
    const char *text = "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"p\"}},"
                       " \"model\": {\"layers\": [{\"type\": \"relu\"}]}}";
    CHECK_EQ_INT(kd_config_parse(&c, text, strlen(text), NULL, "/base/dir", NULL, 0, &err), KD_OK);
    CHECK(strcmp(c.train.path, "/base/dir/p") == 0);
    CHECK(strcmp(c.name, "config") == 0);
    kd_config_free(&c);
    /* Messages name the config even without a file. */
    const char *bad = "{\"data\": 1}";
    CHECK_EQ_INT(kd_config_parse(&c, bad, strlen(bad), NULL, NULL, NULL, 0, &err), KD_EUSAGE);
    CHECK_CONTAINS(err.msg, "config: data: expected an object");
}

/* Integers up to 2^53 - 1 (the largest seed) keep every digit in the resolved JSON, so a rerun
 * from a run folder's config.json uses the same seed and subset seed. */
KD_TEST(config_resolved_json_keeps_large_integers_exact) {
    const char *text = "{\"data\": {\"train\": {\"format\": \"idx\", \"path\": \"x\", \"subset\": 5,"
                       " \"subset_seed\": 9007199254740989}},"
                       " \"model\": {\"layers\": [{\"type\": \"dense\", \"units\": 10}]},"
                       " \"train\": {\"seed\": 9007199254740991}}";
    kd_config c = {0}, again = {0};
    kd_err err;
    CHECK_EQ_INT(kd_config_parse(&c, text, strlen(text), NULL, "/base", NULL, 0, &err), KD_OK);
    char *json = kd_config_to_json(&c);
    CHECK(json != NULL);
    CHECK_CONTAINS(json, "9007199254740991");
    CHECK_CONTAINS(json, "9007199254740989");
    CHECK_EQ_INT(kd_config_parse(&again, json, strlen(json), NULL, "/base", NULL, 0, &err), KD_OK);
    CHECK(again.seed == 9007199254740991ull);
    CHECK(again.train.subset_seed == 9007199254740989ull);
    free(json);
    kd_config_free(&c);
    kd_config_free(&again);
}
