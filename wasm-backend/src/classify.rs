//! Turning the way a guest stopped into an [`Outcome`].
//!
//! A run ends with `Ok` (returned from `_start`: exit 0) or with an error whose chain says why:
//! `proc_exit` ([`I32Exit`]), a host-side stop raised from the epoch callback ([`Stop`]), the memory
//! limiter ([`MemoryLimitExceeded`]), the output sink ([`OutputLimitExceeded`]), or a wasm [`Trap`].
//! Traps that are the program's own fault become `signaled` with a Unix-like signal number so the
//! verdict reads like a native crash.

use runtime_core::{Outcome, OutcomeReason, OutputLimitExceeded};
use wasmtime::{PoolConcurrencyLimitError, Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

use crate::limits::{MemoryLimitExceeded, Stop};

/// Longest `detail` kept for a trap (the wasm backtrace is cut to this).
const MAX_DETAIL_BYTES: usize = 4096;

/// A preview 1 module called `proc_exit` with this value (WASI's `exitcode` is a `u32`). Raised by
/// the backend's own `proc_exit` (see `run::create_linkers`), turned into an outcome by
/// [`exit_outcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the module called proc_exit({0})")]
pub(crate) struct ProcExit(pub u32);

/// Largest exit code a job reports (an 8-bit exit status, as for a native process).
const MAX_EXIT_CODE: u32 = 255;

/// The outcome of `proc_exit(code)`: `exited` with exactly `code` for 0..=255. WASI lets a module
/// pass any `u32`, but an exit status is 8 bits wide everywhere else (the container backend, the
/// shell); a native `exit(256)` would even read as success. So a larger value is reported as
/// `exited` with code 255 — a failure, never a success — and `detail` keeps the value passed.
pub(crate) fn exit_outcome(code: u32) -> Outcome {
    match i32::try_from(code) {
        Ok(exact) if code <= MAX_EXIT_CODE => Outcome::exited(exact),
        _ => Outcome {
            detail: Some(format!(
                "the module called proc_exit({code}); exit codes above {MAX_EXIT_CODE} are reported as {MAX_EXIT_CODE}"
            )),
            ..Outcome::exited(MAX_EXIT_CODE as i32)
        },
    }
}

/// Where the error came from: instantiation (linking, the module's start function) or `_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Instantiate,
    Run,
}

/// Facts about the job the error alone does not carry.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JobFacts {
    /// The job's fuel budget, if it had one.
    pub fuel_limit: Option<u64>,
    /// True when the output sink truncated a stream.
    pub output_truncated: bool,
}

/// The whole error chain on one line (`outer: inner: root`), the way logs and details want it.
pub(crate) fn render_error(err: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
    }
    out
}

/// A guest failure for humans: the error chain on one line, then the wasm backtrace (if any) on
/// the following lines.
pub(crate) fn describe(err: &wasmtime::Error) -> String {
    let backtrace = err.downcast_ref::<WasmBacktrace>().map(ToString::to_string);
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if backtrace.as_deref() == Some(text.as_str()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    if let Some(backtrace) = backtrace {
        out.push('\n');
        out.push_str(&backtrace);
    }
    out
}

/// The Unix-like signal a native program would have died of for this trap.
pub(crate) fn trap_signal(trap: Trap) -> i32 {
    match trap {
        // Invalid memory accesses: what a native segfault looks like.
        Trap::StackOverflow
        | Trap::MemoryOutOfBounds
        | Trap::HeapMisaligned
        | Trap::TableOutOfBounds
        | Trap::IndirectCallToNull
        | Trap::NullReference
        | Trap::ArrayOutOfBounds => libc::SIGSEGV,
        // Arithmetic faults.
        Trap::IntegerDivisionByZero | Trap::IntegerOverflow | Trap::BadConversionToInteger => {
            libc::SIGFPE
        }
        // `unreachable` (Rust panics, C `abort()`) and everything else.
        _ => libc::SIGABRT,
    }
}

fn truncate(mut s: String) -> String {
    if s.len() > MAX_DETAIL_BYTES {
        let mut cut = MAX_DETAIL_BYTES;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str("\n  ...");
    }
    s
}

fn signaled(signal: i32, detail: String) -> Outcome {
    Outcome {
        reason: OutcomeReason::Signaled,
        exit_code: None,
        signal: Some(signal),
        detail: Some(truncate(detail)),
    }
}

/// The outcome of a guest that stopped with `err`.
pub(crate) fn classify(err: &wasmtime::Error, stage: Stage, facts: JobFacts) -> Outcome {
    if let Some(exit) = err.downcast_ref::<ProcExit>() {
        return exit_outcome(exit.0);
    }
    // `wasi:cli/exit` of a component: 0 or 1 from `exit`, a `u8` from `exit-with-code`.
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return exit_outcome(exit.0 as u32);
    }
    if let Some(stop) = err.downcast_ref::<Stop>() {
        let reason = match stop {
            Stop::Cancelled => OutcomeReason::Cancelled,
            Stop::WallTimeout(_) => OutcomeReason::WallTimeout,
        };
        return Outcome::with_reason(reason, stop.to_string());
    }
    if let Some(limit) = err.downcast_ref::<MemoryLimitExceeded>() {
        return Outcome::with_reason(OutcomeReason::MemoryLimit, limit.to_string());
    }
    if let Some(limit) = err.downcast_ref::<OutputLimitExceeded>() {
        return Outcome::with_reason(OutcomeReason::OutputLimit, limit.to_string());
    }
    if let Some(trap) = err.downcast_ref::<Trap>() {
        return match *trap {
            Trap::OutOfFuel => Outcome::with_reason(
                OutcomeReason::CpuTimeout,
                match facts.fuel_limit {
                    Some(fuel) => format!("the job used up its fuel budget of {fuel} units"),
                    None => "the job used up its fuel".to_string(),
                },
            ),
            Trap::Interrupt => Outcome::with_reason(
                OutcomeReason::WallTimeout,
                "the job was interrupted at its deadline",
            ),
            trap => signaled(trap_signal(trap), describe(err)),
        };
    }
    if let Some(pool) = err.downcast_ref::<PoolConcurrencyLimitError>() {
        return Outcome::with_reason(
            OutcomeReason::InternalError,
            format!("no free instance slot: {pool}"),
        );
    }
    if facts.output_truncated {
        return Outcome::with_reason(OutcomeReason::OutputLimit, render_error(err));
    }
    match stage {
        Stage::Instantiate => Outcome::with_reason(
            OutcomeReason::SpecError,
            truncate(format!("cannot instantiate the module: {}", describe(err))),
        ),
        // A host function refused the guest (WASI trap, bad exit status...): the program was
        // aborted, as a native one would be.
        Stage::Run => signaled(
            libc::SIGABRT,
            format!("the job was aborted: {}", describe(err)),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> JobFacts {
        JobFacts {
            fuel_limit: Some(10),
            output_truncated: false,
        }
    }

    #[test]
    fn maps_exit_stop_and_limits() {
        let e = wasmtime::Error::new(I32Exit(7));
        assert_eq!(classify(&e, Stage::Run, facts()), Outcome::exited(7));
        let e = wasmtime::Error::new(Stop::Cancelled).context("while polling");
        assert_eq!(
            classify(&e, Stage::Run, facts()).reason,
            OutcomeReason::Cancelled
        );
        let e = wasmtime::Error::new(Trap::OutOfFuel);
        assert_eq!(
            classify(&e, Stage::Run, facts()).reason,
            OutcomeReason::CpuTimeout
        );
        let e = wasmtime::Error::new(Trap::IntegerDivisionByZero);
        let o = classify(&e, Stage::Run, facts());
        assert_eq!(
            (o.reason, o.signal),
            (OutcomeReason::Signaled, Some(libc::SIGFPE))
        );
        let e = wasmtime::Error::msg("unknown import");
        assert_eq!(
            classify(&e, Stage::Instantiate, facts()).reason,
            OutcomeReason::SpecError
        );
    }

    #[test]
    fn exit_codes_are_exact_up_to_255() {
        for code in [0u32, 1, 125, 126, 127, 128, 134, 200, 255] {
            let e = wasmtime::Error::new(ProcExit(code)).context("in _start");
            let o = classify(&e, Stage::Run, facts());
            assert_eq!(o, Outcome::exited(code as i32), "proc_exit({code})");
            assert_eq!((o.signal, o.detail), (None, None));
        }
        for code in [256u32, 300, 65_536, u32::MAX] {
            let o = classify(&wasmtime::Error::new(ProcExit(code)), Stage::Run, facts());
            assert_eq!(
                (o.reason, o.exit_code, o.signal),
                (OutcomeReason::Exited, Some(255), None),
                "proc_exit({code})"
            );
            assert!(
                o.detail
                    .as_deref()
                    .is_some_and(|d| d.contains(&code.to_string())),
                "{o:?}"
            );
        }
        let e = wasmtime::Error::new(I32Exit(200));
        assert_eq!(classify(&e, Stage::Run, facts()), Outcome::exited(200));
    }

    #[test]
    fn signals() {
        assert_eq!(trap_signal(Trap::UnreachableCodeReached), 6);
        assert_eq!(trap_signal(Trap::StackOverflow), 11);
        assert_eq!(trap_signal(Trap::MemoryOutOfBounds), 11);
        assert_eq!(trap_signal(Trap::IntegerOverflow), 8);
        assert_eq!(trap_signal(Trap::BadSignature), 6);
    }
}
