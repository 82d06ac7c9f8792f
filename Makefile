# lightretriever — the two commands that matter: `make demo` and `make test`.
PG_CONFIG  ?= /usr/lib/postgresql/15/bin/pg_config
PGRX_TEST_DATA ?= /tmp/lightretriever-pgrx-test
export LR_MODEL_ROOT ?= /opt/lightretriever/models
# Tiny random decoder LLMs + their numpy reference outputs (scripts/make_test_models.py).
export LR_TEST_MODELS ?= /tmp/lightretriever-test-models
# One set of compiler flags for every build (crate tests, the #[pg_test] harness, the installed
# extension, e2e, benches), so that the dependency tree is compiled once. RUSTFLAGS, even empty,
# overrides the `--no-gc-sections` rustflags cargo-pgrx injects through --config: that flag is a
# workaround for aarch64 (pgrx#2280); on x86_64 the schema section survives gc-sections, and the
# #[pg_test] harness executable links only with gc-sections. On aarch64 run
# `make RUSTFLAGS="-C link-arg=-Wl,--no-gc-sections" install`.
export RUSTFLAGS ?=

.PHONY: setup demo test image test-image check-dockerfile test-models test-crates test-pg test-pg17 test-pg18 test-e2e test-citus test-examples test-cuda install install-dev bench bench-llm bench-rerank bench-pipeline bench-encode bench-search bench-fusion bench-sparse-index bench-table-store clean

setup:
	bash scripts/setup.sh

## The whole suite: pgrx-free crates, #[pg_test]s in PostgreSQL, end-to-end on a real cluster (the
## example apps included). The container image has its own target, test-image (a fresh machine
## adds ~16 min for its release build).
test: setup
	$(MAKE) test-crates test-pg test-e2e

## Rewritten every run (about 15 s, byte-identical output); readable by the server user for test-pg.
test-models:
	python3 scripts/make_test_models.py --out $(LR_TEST_MODELS)
	python3 tests/decoder_reference/reference.py $(LR_TEST_MODELS)
	python3 tests/rerank_reference/reference.py $(LR_TEST_MODELS)
	chmod -R a+rX $(LR_TEST_MODELS)

test-crates: test-models
	cargo test --locked -p lr-vector -p lr-tokenizer -p lr-table -p lr-model -p lr-encoders -p lr-search -p lr-fit -p lr-eval -p lr-service -p lr-queue -p lr-rerank

test-pg: test-models
	mkdir -p $(PGRX_TEST_DATA) && chown postgres: $(PGRX_TEST_DATA)
	cargo pgrx test -p lightretriever --runas postgres --pgdata $(PGRX_TEST_DATA) pg15

## Another PostgreSQL major (not in `make test`: ~20-25 min the first time, the server and a second
## extension build): 18 built from Debian sid's source package into /opt/lightretriever/postgresql-18;
## 17 as Debian trixie's packages in a trixie root file system (mmdebstrap), where the tests run
## (scripts/rootfs_run.sh). Its #[pg_test]s, and the end-to-end foundation, pipeline,
## every-database and replica tests on a cluster of it.
## README, "PostgreSQL versions", says how each was last run.
test-pg17 test-pg18: test-models
	bash scripts/test_pg_major.sh $(@:test-pg%=%)

## End-to-end: install the (dev-profile) extension into the system PostgreSQL 15, start a
## throwaway cluster, run tests/e2e against it, stop it.
test-e2e: install-dev
	bash scripts/e2e.sh

## Citus alone (test-e2e runs it too): Citus built from ../shared/vendor, a coordinator and two
## worker nodes on this machine, tests/e2e/tests/citus.rs.
test-citus: test-models install-dev
	bash scripts/setup_citus.sh
	LR_PGPORT=29100 bash scripts/citus_cluster.sh start
	LR_CITUS_PGHOST=/tmp/lightretriever-cluster-29100/sock LR_CITUS_PGPORT=29100 cargo test --locked -p lr-e2e --test citus -- --test-threads=1; \
	  status=$$?; LR_PGPORT=29100 bash scripts/citus_cluster.sh stop; exit $$status

## The example apps (examples/: SQLAlchemy, Django, sqlx), each with its own test, against a RUNNING
## cluster that preloads the installed extension: LR_TEST_PGHOST (its socket directory) and
## LR_TEST_PGPORT, e.g. after `LR_PGPORT=28900 scripts/cluster.sh start`:
##   make test-examples LR_TEST_PGHOST=/tmp/lightretriever-cluster-28900/sock LR_TEST_PGPORT=28900
## test-e2e runs them too (scripts/e2e.sh). Each app's dependencies go into examples/*/.venv and
## examples/rust-sqlx/target (PyPI and crates.io the first time).
test-examples: test-models
	bash scripts/examples.sh

## GPU machines only (not part of `make test`): the encoders and the reranker on cuda:0 against the same
## references. Needs the CUDA toolkit (nvcc) to build and an NVIDIA GPU to run; the build has
## its own target directory so that the CPU build is not recompiled.
test-cuda: test-models
	CARGO_TARGET_DIR=target/cuda cargo test --locked -p lr-encoders -p lr-rerank --features lr-encoders/cuda,lr-rerank/cuda --test cuda

## The container image of docker/Dockerfile without a Docker engine or registry (Debian packages
## only: mmdebstrap, scripts/oci_archive.py) → target/image/lightretriever-oci.tar. Root. Builds the
## release library (cargo pgrx package): 14.5 min cold, seconds warm (README, "Container image").
image: setup
	bash scripts/setup_image.sh
	bash scripts/build_image.sh

## Starts that image through its own entrypoint (podman, else unshare + chroot) on 127.0.0.1:28960,
## waits for health, then auto-encoding, hybrid lr_search and lr_rerank through psql; tears down.
test-image: image
	bash scripts/test_image.sh

## docker/Dockerfile itself, built by buildah against local stand-ins of its base images (no
## registry here), its files compared with `make image`'s. Slow: a release build in the builder stage.
check-dockerfile: image
	bash scripts/check_dockerfile.sh

install:
	cargo pgrx install -p lightretriever --release --pg-config $(PG_CONFIG)

install-dev:
	cargo pgrx install -p lightretriever --pg-config $(PG_CONFIG)

demo: setup install-dev
	bash scripts/demo.sh

bench: setup
	cargo bench -p lr-benches --profile dev --bench encode  # dev = opt-level 3 for every crate here; reuses the test build

## Decoder LLMs at real shapes (random weights): docs/s, tokens/s, projected table build time.
bench-llm: setup
	cargo bench -p lr-benches --profile dev --bench llm

## PE-Rank at Qwen2.5-0.5B's shape (random weights, written once under target/lr-bench): top-20/top-100
## in embedding vs text mode, prefill vs decode, 8 service callers vs 1, FLOPs and a Mistral-7B GPU projection.
bench-rerank: setup
	cargo bench -p lr-benches --profile dev --bench rerank

## Auto-encoding pipeline vs in-process encoding, and lr_encode_document latency, 1 vs 8 callers.
bench-pipeline: setup install-dev
	bash scripts/bench_pipeline.sh

## Document encoding side by side (docs/bench/encode.json + encode.svg): ours in-process, through the
## worker (lr_encode_documents, one call per row, auto-encoding), candle's ops and ONNX Runtime on
## the same texts and weights; a decoder at Qwen2.5-0.5B's shape against the measured f32 peak.
## Root (apt, for the export's torch). The installed (release) extension runs the worker side.
## BENCH_ARGS=--quick: smoke run (about 3 minutes; the full run about 20).
bench-encode: setup install
	bash scripts/setup_bench_encode.sh
	cargo build --release --locked -p lr-benches --example encode_texts
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE target/bench-venv/bin/python benches/encode_side_by_side.py $(BENCH_ARGS)

## Search through pgbench on live auto-encoded tables (CISI, 100k synthetic rows; 1/8/32 clients): the
## lookup query vs the full-model query through the worker vs lr_search hybrid; lr_encode_query's
## cost per call inside SQL; memory of 32 backends. docs/bench/search.json + search.svg. About 25 minutes.
bench-search: setup install
	python3 benches/search_side_by_side.py

## lr_search's cost per fusion setting (published min-max, z-score, rrf, feedback), side by side
## on CISI through pgbench: docs/bench/fusion.json. About 5 minutes.
bench-fusion: setup install
	python3 benches/fusion_cost.py

## The sparse side with and without pgvector's sparse HNSW index, side by side: recall of the
## candidates, nDCG@10 on CISI, lr_search q/s, on bench-search's tables (CISI, 100k synthetic
## rows) (docs/bench/sparse-index.json). About 30 minutes.
bench-sparse-index: setup install
	python3 benches/sparse_index_cost.py

## The 1 GB query table (128,256 x 4,096 f16) built, stored and written again from the
## database, with the backend's private memory sampled (docs/bench/table-store.json).
bench-table-store: setup install
	python3 benches/table_store_memory.py

clean:
	cargo clean
