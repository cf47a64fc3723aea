# The README's commands. `make run` and `make test` need only the Rust
# toolchain; anything else a check needs is installed under .tools/.

.PHONY: run test lint fmt fuzz reliability bench clients clean-tools

## Start the service on the embedded SQLite database with a demo workspace.
run:
	cargo run --locked -- serve --demo

## Every test: rustfmt, buf lint and breaking, unit + integration on SQLite and
## PostgreSQL, the Python and Node polyglot clients, and the demo's grpcurl call.
test:
	@bash scripts/test.sh

## Property tests with many cases (make test runs them with proptest's default 256).
FUZZ_CASES ?= 100000
fuzz:
	PROPTEST_CASES=$(FUZZ_CASES) cargo test --locked --release --test properties

## The reliability suite with long settings (make test runs it short).
reliability:
	RELIABILITY_UPDATES=50000 RELIABILITY_KEYS=5000 bash scripts/reliability.sh

## The service against PostgreSQL running the same statements (BENCH_QUICK=1: short).
bench:
	bash scripts/bench.sh

## Regenerate every example client from proto/ (never committed): Node with
## buf + protoc-gen-es (proto/buf.gen.yaml), Python with grpcio-tools.
clients:
	@bash scripts/clients.sh

## Static checks: rustfmt, clippy, rustdoc (broken doc links) and buf lint.
lint:
	cargo fmt --all -- --check
	cargo clippy --locked --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" cargo doc --locked --no-deps
	@bash -c 'cd proto && ../.tools/buf/node_modules/.bin/buf lint'

fmt:
	cargo fmt --all

clean-tools:
	rm -rf .tools
