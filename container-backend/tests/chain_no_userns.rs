//! `tests/chain.rs` with user namespaces off (`--userns off`): the same tests, one module
//! here; `container_support::userns_mode` reads the mode from this binary's name.

#[path = "chain.rs"]
mod suite;
