//! `tests/container_limits.rs` with user namespaces off (`--userns off`): the same tests, one module
//! here; `container_support::userns_mode` reads the mode from this binary's name.

#[path = "container_limits.rs"]
mod suite;
