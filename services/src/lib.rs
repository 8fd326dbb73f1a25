//! nekton's services: the HTTP API, the worker, the PostgreSQL queue and the CLI, in one crate that
//! builds the `nekton` binary. See ARCHITECTURE.md for the code map.
//!
//! - [`api`]: the v1 HTTP API (axum), its wire types and the OpenAPI document.
//! - [`grading`]: test suites — the suite spec, output comparison, verdicts and the summary.
//! - [`model`]: the job model shared by all of them (states, outcome, usage, the resolved job).
//! - [`store`]: everything that touches PostgreSQL — migrations, job records, the queue, logs.
//! - [`worker`]: claims jobs and runs them on a `runtime_core::Backend`.
//! - [`webhooks`]: job and batch completion events to tenants' endpoints (signing, the address
//!   policy, retries, the delivery loop).
//! - [`images`]: a worker host's registry configuration, image service and container backend.
//! - [`pg`]: the embedded PostgreSQL server used when no database URL is given.
//! - [`server`]: assembling the pieces into `serve`, `api` and `worker` processes.
//! - [`cli`]: the client commands (`run`, `jobs`, `batch`, `module`) and the typed HTTP client.

pub mod api;
pub mod cli;
pub mod config;
pub mod demo;
pub mod grading;
pub mod images;
pub mod metrics;
pub mod model;
pub mod pg;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod testing;
pub mod webhooks;
pub mod worker;
