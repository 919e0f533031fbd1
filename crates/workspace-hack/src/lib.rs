//! No code: this package exists for its `Cargo.toml`.
//!
//! Cargo resolves a dependency's features per build: `cargo run --release`
//! (the daemon) and `cargo run --release -p test-support --bin
//! fake-green-api` (the quick start's demo provider) would each compile
//! shared dependencies with their own feature sets, so the second command
//! rebuilt about 78 crates the first had just built. Every workspace package
//! depends on this one, which asks for the union of the features the
//! workspace uses, so each dependency is compiled once whatever package is
//! built. `cargo hakari generate` rewrites the list after a dependency
//! change; `cargo hakari verify` checks it (docs/development.md).
