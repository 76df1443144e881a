# distill - build, test, sanitizer and benchmark targets.
# Two builds of the same sources: the release ./distill (build/libdistill.a), which has no test
# hook, and the test build, compiled with -DKD_TEST_HOOKS into build/hooks/ (the hooks of
# src/core/test_hooks.h: fault injection, path counters, KD_TRAIN_STOP_AFTER_STEPS), archived
# as build/libdistill-hooks.a and linked as build/hooks/distill. Which binary each target links:
#   make            build ./distill (release)
#   make test       build and run the test suite (last line: "N passed, N failed, N skipped"):
#                   build/run_tests links the hooks library and runs build/hooks/distill
#                   (KD_DISTILL); one test checks that ./distill has no hook (nm, strings)
#   make asan       the same suite under AddressSanitizer + UndefinedBehaviorSanitizer
#                   (build-asan/, the same two builds)
#   make bench      benchmarks (sgemm peak, training step, loaders, ...), linked with the hooks
#                   library (bench_gemm and bench_cnn set hooks), then the C headers' code,
#                   flash and RAM on a Cortex-M4 (tests/mcu/sizes.sh, arm-none-eabi-size, QEMU)
#                   and their single-sample speed at cc -O2, f32 against qint8
#                   (tests/bench/bench_header.sh)
#   make bench-torch  the same jobs in distill and PyTorch side by side (if python3-torch is
#                   there): build/bench/bench_jobs, hooks library
#   make bench-ort  ONNX Runtime and distill on the same exported models (issue 29): build/bench/
#                   bench_ort, hooks library; ARGS=--quick for a short run
#   make demo       train the Fashion-MNIST teacher, distil two students, compare, ship the compact
#                   one as int8 ONNX and C header (README main job)
#   make setup      install missing Debian packages (same as bash .ci/setup.sh)
#   make check-layers  fail on an #include or a call against the module order (.ci/layers.txt)
#   make fuzz       libFuzzer targets (clang, ASan+UBSan), each run FUZZ_SECONDS (default 60):
#                   build-fuzz/fuzz/fuzz_* link build-fuzz's hooks library; the seeds are made
#                   with build/hooks/distill
#   make valgrind   the end-to-end tests with every build/hooks/distill run under valgrind memcheck
#   make MPI=1      build build-mpi/distill (release) for data-parallel training under mpirun
#   make mpi-test   that build's test binary build-mpi/hooks/distill, then tests/mpi.sh: two-rank
#                   runs checked against one process
#   make mpi-bench  1 rank x 2 threads against 2 ranks x 1 thread (tests/bench/mpi_bench.sh, the
#                   release build-mpi/distill)
#   make man        build/distill.1, the man page, generated from the binary's help texts
#   make install    the binary, the man page and the bash completion under $(DESTDIR)$(PREFIX)
#                   (PREFIX=/usr/local); make uninstall removes exactly those three files
# WERROR=1 turns warnings into errors (CI sets it).

CC      ?= cc
MPI     ?= 0
# The MPI build lives in its own folder: its objects never mix with the default build's.
ifeq ($(MPI),1)
BUILD   ?= build-mpi
BIN     ?= build-mpi/distill
endif
BUILD   ?= build
BIN     ?= distill
PKGS    := libcjson zlib libprotobuf-c
# The ONNX exporter's protobuf code is generated at build time from Debian's onnx.proto
# (libonnx-dev) by protoc-c (protobuf-c-compiler) into $(BUILD)/gen; never committed.
ONNX_PROTO ?= /usr/include/onnx/onnx.proto
PROTOC_C   ?= protoc-c
OPT     ?= -O3
WERROR  ?= 0

# Debian's OpenMP build of OpenBLAS, by path: the system-wide libopenblas.so.0 alternative
# prefers the pthreads build, whose own thread pool would fight libgomp's (docs/design.md).
# The rpath makes the loader take the OpenMP build whatever the alternative says; a test checks
# openblas_get_parallel() == 2 at run time.
BLAS_PC    := /usr/lib/x86_64-linux-gnu/openblas-openmp/pkgconfig
BLAS_CFLAGS := $(shell PKG_CONFIG_LIBDIR=$(BLAS_PC) pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBDIR := $(shell PKG_CONFIG_LIBDIR=$(BLAS_PC) pkg-config --variable=libdir openblas 2>/dev/null)

PKG_CFLAGS := $(BLAS_CFLAGS) $(shell pkg-config --cflags $(PKGS) stb 2>/dev/null)
PKG_LIBS   := -L$(BLAS_LIBDIR) -Wl,-rpath,$(BLAS_LIBDIR) -lopenblas \
              $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CFLAGS  += -std=c11 $(OPT) -g -fopenmp -Wall -Wextra -Wshadow -Wno-format-truncation -fno-math-errno -D_POSIX_C_SOURCE=200809L \
           -Iinclude -I$(BUILD)/gen $(PKG_CFLAGS) -MMD -MP $(EXTRA_CFLAGS)
ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif
LDLIBS  += $(PKG_LIBS) -fopenmp -lpthread -lm
# Open MPI's C bindings (libopenmpi-dev); only src/dist/dist.c includes <mpi.h>.
ifeq ($(MPI),1)
CFLAGS  += -DKD_MPI $(shell pkg-config --cflags ompi-c 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs ompi-c 2>/dev/null)
endif

LIB_SRC   := $(sort $(wildcard src/*/*.c))
MAIN_SRC  := src/main.c
TEST_SRC  := $(sort $(wildcard tests/*.c))
BENCH_SRC := $(sort $(wildcard tests/bench/*.c))

GEN_SRC   := $(BUILD)/gen/onnx.pb-c.c
GEN_HDR   := $(BUILD)/gen/onnx.pb-c.h
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o) $(GEN_SRC:%.c=%.o)
MAIN_OBJ  := $(MAIN_SRC:%.c=$(BUILD)/%.o)
# The test build: the same sources with -DKD_TEST_HOOKS, in their own folder (the generated
# ONNX code has no hook and is shared).
HOOK_OBJ  := $(LIB_SRC:%.c=$(BUILD)/hooks/%.o) $(GEN_SRC:%.c=%.o)
HOOK_MAIN := $(MAIN_SRC:%.c=$(BUILD)/hooks/%.o)
HOOK_LIB  := $(BUILD)/libdistill-hooks.a
TEST_BIN  := $(BUILD)/hooks/distill
TEST_OBJ  := $(TEST_SRC:%.c=$(BUILD)/%.o)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)
# bench_jobs and bench_ort run one job given on their command line: bench-torch's and
# bench-ort's, not bench's.
BENCH_RUN := $(filter-out %/bench_jobs %/bench_ort,$(BENCH_BIN))

.PHONY: all test asan bench bench-torch bench-ort demo setup clean check-deps fuzz fuzz-build valgrind \
        mpi mpi-test mpi-bench check-layers man install uninstall

all: check-deps $(BIN)

check-deps:
	@pkg-config --exists $(PKGS) stb && PKG_CONFIG_LIBDIR=$(BLAS_PC) pkg-config --exists openblas && \
	  command -v $(PROTOC_C) >/dev/null && [ -r $(ONNX_PROTO) ] || \
	  { echo "missing libraries or tools: run 'bash .ci/setup.sh' (as root) first" >&2; exit 1; }
	@[ "$(MPI)" != 1 ] || { pkg-config --exists ompi-c && command -v mpirun >/dev/null; } || \
	  { echo "MPI=1 needs Open MPI (libopenmpi-dev, openmpi-bin): run 'bash .ci/setup.sh'" >&2; exit 1; }

# protoc-c writes onnx.pb-c.c and onnx.pb-c.h together.
$(GEN_SRC) $(GEN_HDR) &: $(ONNX_PROTO)
	@mkdir -p $(BUILD)/gen
	$(PROTOC_C) -I$(dir $(ONNX_PROTO)) --c_out=$(BUILD)/gen $(ONNX_PROTO)

$(GEN_SRC:%.c=%.o): $(GEN_SRC) $(GEN_HDR)
	$(CC) $(CFLAGS) -c $< -o $@

# Every object may include the generated header: it must exist before any compiles.
$(LIB_OBJ) $(MAIN_OBJ) $(HOOK_OBJ) $(HOOK_MAIN) $(TEST_OBJ): | $(GEN_HDR)

# The tests, benchmarks and fuzz targets set hooks: they see their declarations.
HOOK_CFLAGS := -DKD_TEST_HOOKS
$(TEST_OBJ): CFLAGS += $(HOOK_CFLAGS)

$(BUILD)/hooks/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(HOOK_CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libdistill.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(HOOK_LIB): $(HOOK_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(MAIN_OBJ) $(BUILD)/libdistill.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(TEST_BIN): $(HOOK_MAIN) $(HOOK_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/run_tests: $(TEST_OBJ) $(HOOK_LIB)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The MPI build's own benchmarks (tests/bench/mpi/, never built without MPI=1).
$(BUILD)/bench/mpi_%: tests/bench/mpi/%.c $(HOOK_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(HOOK_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/bench/%: tests/bench/%.c $(HOOK_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(HOOK_CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# Tests run the test build of the binary through KD_DISTILL, and look at the release binary
# (KD_DISTILL_RELEASE) only to check that it has no hook; TEST=name filters cases by name or
# file. The benchmarks are built (not run) with the tests, so a change that breaks them fails CI.
test: check-deps $(BIN) $(TEST_BIN) $(BUILD)/run_tests $(BENCH_BIN)
	KD_DISTILL=$(abspath $(TEST_BIN)) KD_DISTILL_RELEASE=$(abspath $(BIN)) $(BUILD)/run_tests $(TEST)

asan:
	$(MAKE) BUILD=build-asan BIN=build-asan/distill OPT="-O1 -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	  LDFLAGS="-fsanitize=address,undefined" test

# Fuzzing: the library rebuilt by clang with coverage instrumentation and ASan + UBSan (the
# first report aborts), one libFuzzer binary per parser (tests/fuzz/fuzz_*.c). tests/fuzz/run.sh
# makes the seed corpora from the fixtures (with ./distill for real checkpoints), runs each target
# for FUZZ_SECONDS and prints executions, exec/s and edges; any crash, timeout (> 1 s), leak or
# out-of-memory (> 1 GiB) fails it. FUZZ_TARGETS="idx csv" runs a subset.
# stb_image 2.27 (Debian 12) shifts a 32-bit buffer by 32 or more when the entropy-coded data
# of a corrupt JPEG runs out (stb_image.h:2065, fixed upstream in 2.28): the shift check is left
# out for that one file, so the fuzzer keeps looking for everything else there (see README
# "Reliability"). Every other check stays on in every file.
STB_SAN_EXCEPT := -fno-sanitize=shift-exponent
# A 5 KiB JPEG may declare 16M pixels, which stb decodes from zeros past the end of the file:
# within the cap, 0.3 s in the release build but 3-4 s instrumented, over the fuzzer's 1 s
# limit. The fuzz build caps pixels at 2^19 (the cap's own checks run the same at any value).
FUZZ_IMAGE_CAP := -DKD_IMAGE_MAX_PIXELS=524288
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= safetensors idx csv config image cache onnx
FUZZ_SAN     := -fsanitize=address,undefined -fno-sanitize-recover=all
FUZZ_ALL     := safetensors idx csv config image cache onnx

fuzz-build:
	$(MAKE) CC=clang BUILD=build-fuzz OPT="-O1 -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-Wno-unknown-warning-option -fsanitize=fuzzer-no-link $(FUZZ_SAN) $(FUZZ_IMAGE_CAP)" LDFLAGS="-fsanitize=fuzzer $(FUZZ_SAN)" \
	  STB_CFLAGS="$(STB_SAN_EXCEPT)" $(FUZZ_ALL:%=build-fuzz/fuzz/fuzz_%) build-fuzz/fuzz/seed_images

$(BUILD)/src/data/stb_impl.o $(BUILD)/hooks/src/data/stb_impl.o: CFLAGS += $(STB_CFLAGS)

$(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(HOOK_LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(HOOK_CFLAGS) $(LDFLAGS) -o $@ $< $(HOOK_LIB) $(LDLIBS)

# Writes the JPEG seeds (stb_image_write); an ordinary program, so no fuzzer runtime.
$(BUILD)/fuzz/seed_images: tests/fuzz/seed_images.c
	@mkdir -p $(dir $@)
	$(CC) -O1 $(PKG_CFLAGS) -o $@ $< -lm

fuzz: check-deps $(TEST_BIN) fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh $(FUZZ_TARGETS)

# Valgrind memcheck on the end-to-end tests (every distill run of these test files; see
# tests/valgrind.sh for the exit code and tests/valgrind.supp for the suppressions).
VALGRIND_TESTS ?= test_cli test_info test_predict eval_cli eval_and_export export_cli test_faults
valgrind: check-deps $(TEST_BIN) $(BUILD)/run_tests
	bash tests/valgrind.sh $(VALGRIND_TESTS)

# Data-parallel training: the MPI build (its own folder), then two-rank runs on tiny jobs
# compared with one process (tests/mpi.sh prints "N passed, N failed, N skipped").
mpi:
	$(MAKE) MPI=1 all build-mpi/hooks/distill build-mpi/bench/mpi_bench_allreduce
mpi-test: mpi
	KD_DISTILL_MPI=$(abspath build-mpi/hooks/distill) bash tests/mpi.sh

mpi-bench: mpi
	KD_DISTILL_MPI=$(abspath build-mpi/distill) bash tests/bench/mpi_bench.sh $(ARGS)

# bench_train's fractions of peak also against the peak of the kernels OpenBLAS picks for this
# CPU by itself: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset for that one command (OpenBLAS reads
# them when it loads, so it is a process of its own).
bench: check-deps $(BIN) $(BENCH_BIN)
	@up=$$(env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE ./$(BUILD)/bench/bench_train --peak) && \
	  echo "== unpinned OpenBLAS: $$up" && \
	  export KD_UNPINNED_PEAK=$$(echo "$$up" | sed -n 's/.*peak_gflops=\([0-9.]*\).*/\1/p') \
	         KD_UNPINNED_CORE=$$(echo "$$up" | sed -n 's/.*core=\([A-Za-z0-9_]*\).*/\1/p') && \
	  for b in $(BENCH_RUN); do echo "== $$b"; ./$$b || exit 1; done
	@echo "== tests/mcu/sizes.sh (Cortex-M4 flash and RAM of the students' C headers)"
	@bash tests/mcu/sizes.sh $(BIN)
	@echo "== tests/bench/bench_header.sh (single sample, f32 and qint8 C headers at cc -O2)" && bash tests/bench/bench_header.sh $(BIN)

# One process per job and side, alternating; PyTorch's side only when /usr/bin/python3 has torch.
bench-torch: check-deps $(BUILD)/bench/bench_jobs
	/usr/bin/python3 tests/bench/side_by_side.py $(ARGS)

# ONNX Runtime (npm, tests/export/ort_install.sh) and distill on the same exported models,
# alternating rounds, pinned and unpinned OpenBLAS (tests/bench/bench_ort.py; ARGS=--quick).
bench-ort: check-deps $(BUILD)/bench/bench_ort
	bash tests/export/ort_install.sh
	/usr/bin/python3 tests/bench/bench_ort.py $(ARGS)

# Installation. The man page is generated from the help texts of the binary being installed
# (share/mkman.sh), so it cannot disagree with them; the completion reads them at run time.
PREFIX  ?= /usr/local
DESTDIR ?=
MAN_PAGE := $(BUILD)/distill.1
INSTALLED := $(DESTDIR)$(PREFIX)/bin/distill $(DESTDIR)$(PREFIX)/share/man/man1/distill.1 \
             $(DESTDIR)$(PREFIX)/share/bash-completion/completions/distill

$(MAN_PAGE): $(BIN) share/mkman.sh
	@mkdir -p $(dir $@)
	bash share/mkman.sh $(abspath $(BIN)) > $@.tmp && mv $@.tmp $@

man: $(MAN_PAGE)

install: all $(MAN_PAGE)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
	  $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	install -m 755 $(BIN) $(DESTDIR)$(PREFIX)/bin/distill
	install -m 644 $(MAN_PAGE) $(DESTDIR)$(PREFIX)/share/man/man1/distill.1
	install -m 644 share/distill.bash $(DESTDIR)$(PREFIX)/share/bash-completion/completions/distill

uninstall:
	rm -f $(INSTALLED)

demo: all
	./configs/demo.sh

setup:
	bash .ci/setup.sh

# The module order of .ci/layers.txt: every #include of src/ and include/, and every symbol one
# module's object takes from another's, must follow it.
check-layers: $(LIB_OBJ) $(MAIN_OBJ)
	bash .ci/check_layers.sh $(filter $(BUILD)/src/%,$^)

clean:
	rm -rf build build-asan build-fuzz build-mpi distill

-include $(LIB_OBJ:.o=.d) $(MAIN_OBJ:.o=.d) $(HOOK_OBJ:.o=.d) $(HOOK_MAIN:.o=.d) $(TEST_OBJ:.o=.d) \
         $(wildcard $(BUILD)/fuzz/*.d)
