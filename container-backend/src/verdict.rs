//! The verdict of a container job: a pure function from what the worker observed — which limit
//! (if any) made it kill the container, the error report of the setup, the status record of the
//! job's process, the cgroup's OOM-kill count — to the job's [`Outcome`]. No syscalls, so every
//! rule is unit-tested without root.
//!
//! Precedence, highest first:
//! 1. An OOM kill of any process of the job (the main one or a child) is the verdict whatever
//!    else happened — a wall or CPU timeout, an output limit, a setup error, an exit code —
//!    except a cancel, which the user asked for.
//! 2. A limit the worker enforced by killing the container ([`Stopped`]: cancel, setup timeout,
//!    wall time, output limit, the cgroup's CPU-time watch).
//! 3. A setup error reported on the error pipe (spec, image, not-found or internal).
//! 4. The status record: a signal is a CPU timeout when a CPU limit was set and the signal is
//!    `RLIMIT_CPU`'s (SIGXCPU at the soft limit; SIGKILL at the hard limit one second later,
//!    recognised by the job's CPU time reaching 95 % of the limit — the rusage total can trail
//!    the kernel's tick-based check), else `Signaled`; an exit is `Exited`.
//! 5. No status record: the init ended without reporting (an internal error).
//!
//! An internal error (4's missing status record, or 3's internal setup error) of a job whose
//! memory peak reached its limit is `memory_limit`: an allocation of the container's start was
//! refused at the limit. So is an exit with status 127 (a command that could not be run) at the
//! limit: the start failed for lack of memory after the exec. The init and the job's process are
//! never OOM-killed while they run on the worker's memory (the kernel skips vfork children), so
//! such a start fails without an OOM kill to count.
//!
//! Whatever the reason, the job's exit code or signal is kept alongside it when known (a setup
//! spec error's exit 127 is not reported: the job never ran).

use std::time::Duration;

use runtime_core::{Outcome, OutcomeReason};

use super::protocol::{self, ErrorKind, ErrorReportError, Status, StatusError};

/// Why the worker killed the container (the first limit that fired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stopped {
    Cancelled,
    /// The setup (namespaces, mounts, user lookup) took longer than this.
    SetupTimeout(Duration),
    /// The job ran longer than its wall-time limit.
    WallTimeout(Duration),
    /// An output stream passed its cap; the sink's description of it.
    OutputLimit(String),
    /// The cgroup's CPU usage of every process of the job passed `limit`.
    CpuLimit {
        limit: Duration,
        used: Duration,
    },
}

impl Stopped {
    fn outcome(&self) -> Outcome {
        let (reason, detail) = match self {
            Self::Cancelled => (OutcomeReason::Cancelled, "cancelled".to_string()),
            Self::SetupTimeout(t) => (
                OutcomeReason::InternalError,
                format!("container setup took longer than {}s", t.as_secs()),
            ),
            Self::WallTimeout(wall) => (
                OutcomeReason::WallTimeout,
                format!("wall time limit of {wall:?} exceeded"),
            ),
            Self::OutputLimit(detail) => (OutcomeReason::OutputLimit, detail.clone()),
            Self::CpuLimit { limit, used } => (
                OutcomeReason::CpuTimeout,
                format!(
                    "CPU time limit of {limit:?} exceeded: the job's processes used {used:?} \
                     in total"
                ),
            ),
        };
        Outcome::with_reason(reason, detail)
    }
}

/// Everything the verdict depends on.
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    pub stopped: Option<Stopped>,
    /// What the error pipe carried (empty: the job's program was executed).
    pub error_report: &'a [u8],
    /// The decoded status record of the job's process.
    pub status: Result<Status, StatusError>,
    /// The job's CPU-time limit (`limits.cpu_time`).
    pub cpu_limit: Option<Duration>,
    /// The job's memory limit in bytes (for the OOM detail).
    pub memory_limit: u64,
    /// Processes of the job the kernel OOM-killed (the cgroup's count).
    pub oom_kills: u64,
    /// The cgroup's memory high-water mark in bytes, when known.
    pub memory_peak: Option<u64>,
}

fn setup_error(msg: &[u8]) -> Outcome {
    match protocol::decode_error(msg) {
        Ok(Some((kind, text))) => {
            let (reason, text) = match kind {
                ErrorKind::Spec | ErrorKind::NotFound => (OutcomeReason::SpecError, text),
                ErrorKind::Image => (OutcomeReason::ImageError, text),
                ErrorKind::Internal => (
                    OutcomeReason::InternalError,
                    format!("container setup failed: {text}"),
                ),
            };
            Outcome::with_reason(reason, text)
        }
        Ok(None) => Outcome::with_reason(
            OutcomeReason::InternalError,
            "container setup failed: an empty error report",
        ),
        Err(ErrorReportError::UnknownKind(b)) => Outcome::with_reason(
            OutcomeReason::InternalError,
            format!(
                "container setup failed: an error report of unknown kind {b:#04x}: {}",
                image_store::display_bytes(msg.get(1..).unwrap_or_default())
            ),
        ),
        Err(ErrorReportError::ShortExecReport) => Outcome::with_reason(
            OutcomeReason::InternalError,
            format!(
                "container setup failed: a truncated exec error report of {} bytes",
                msg.len()
            ),
        ),
    }
}

/// The job's outcome from `facts` (see the module docs for the precedence).
pub(crate) fn verdict(facts: &Facts<'_>) -> Outcome {
    let status = facts.status.as_ref().ok();
    let mut outcome = if let Some(stopped) = &facts.stopped {
        stopped.outcome()
    } else if !facts.error_report.is_empty() {
        setup_error(facts.error_report)
    } else if let Some(s) = status {
        let cpu = s.user + s.system;
        match (s.signaled_value(), facts.cpu_limit) {
            ((true, sig), Some(limit))
                if sig == libc::SIGXCPU || (sig == libc::SIGKILL && cpu >= limit.mul_f64(0.95)) =>
            {
                Outcome::with_reason(
                    OutcomeReason::CpuTimeout,
                    format!("CPU time limit of {limit:?} exceeded"),
                )
            }
            ((true, sig), _) => Outcome {
                reason: OutcomeReason::Signaled,
                exit_code: None,
                signal: Some(sig),
                detail: None,
            },
            ((false, code), _) => Outcome::exited(code),
        }
    } else {
        let detail = match &facts.status {
            Err(StatusError::Length(0)) | Ok(_) => String::new(),
            Err(e) => format!(" ({e})"),
        };
        Outcome::with_reason(
            OutcomeReason::InternalError,
            format!("the container's init ended without reporting the job's status{detail}"),
        )
    };
    if outcome.exit_code.is_none()
        && outcome.signal.is_none()
        && let Some(s) = status
    {
        match s.signaled_value() {
            (true, sig) => outcome.signal = Some(sig),
            (false, code) if outcome.reason != OutcomeReason::SpecError => {
                outcome.exit_code = Some(code);
            }
            (false, _) => {}
        }
    }
    let at_limit = facts
        .memory_peak
        .is_some_and(|peak| peak >= facts.memory_limit);
    if facts.oom_kills > 0 && outcome.reason != OutcomeReason::Cancelled {
        outcome.reason = OutcomeReason::MemoryLimit;
        outcome.detail = Some(format!(
            "memory limit of {} bytes exceeded: the kernel OOM-killed {} process(es) of the job",
            facts.memory_limit, facts.oom_kills
        ));
    } else if outcome.reason == OutcomeReason::InternalError && at_limit {
        outcome.reason = OutcomeReason::MemoryLimit;
        outcome.detail = Some(format!(
            "memory limit of {} bytes reached while the container started: the kernel refused an \
             allocation of its setup ({})",
            facts.memory_limit,
            outcome.detail.as_deref().unwrap_or("no detail")
        ));
    } else if outcome.reason == OutcomeReason::Exited && outcome.exit_code == Some(127) && at_limit
    {
        // 127: a command that could not be run. At the limit, the start itself failed for lack of
        // memory after the exec (seen with the smallest limit, 64 KiB: no error report, no output).
        outcome.reason = OutcomeReason::MemoryLimit;
        outcome.detail = Some(format!(
            "memory limit of {} bytes reached while the job started: it exited with status 127 \
             (a command that could not be run)",
            facts.memory_limit
        ));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ChildError, Exit, encode_error};

    const SEC: Duration = Duration::from_secs(1);

    fn status(exit: Exit, cpu: Duration) -> Result<Status, StatusError> {
        Ok(Status {
            exit,
            user: cpu,
            system: Duration::ZERO,
            maxrss_kib: 0,
            disk_used_bytes: 0,
        })
    }

    fn facts(status: Result<Status, StatusError>) -> Facts<'static> {
        Facts {
            stopped: None,
            error_report: b"",
            status,
            cpu_limit: None,
            memory_limit: 64 << 20,
            oom_kills: 0,
            memory_peak: None,
        }
    }

    fn signaled(sig: i32) -> Outcome {
        Outcome {
            reason: OutcomeReason::Signaled,
            exit_code: None,
            signal: Some(sig),
            detail: None,
        }
    }

    fn with(reason: OutcomeReason, detail: &str, code: Option<i32>, sig: Option<i32>) -> Outcome {
        Outcome {
            reason,
            exit_code: code,
            signal: sig,
            detail: Some(detail.into()),
        }
    }

    #[test]
    fn exits_and_signals() {
        assert_eq!(
            verdict(&facts(status(Exit::Code(0), SEC))),
            Outcome::exited(0)
        );
        assert_eq!(
            verdict(&facts(status(Exit::Code(3), SEC))),
            Outcome::exited(3)
        );
        assert_eq!(
            verdict(&facts(status(Exit::Signal(libc::SIGSEGV), SEC))),
            signaled(libc::SIGSEGV)
        );
        // Without a CPU limit, neither SIGXCPU nor SIGKILL is a CPU timeout.
        assert_eq!(
            verdict(&facts(status(Exit::Signal(libc::SIGXCPU), 9 * SEC))),
            signaled(libc::SIGXCPU)
        );
        assert_eq!(
            verdict(&facts(status(Exit::Signal(libc::SIGKILL), 9 * SEC))),
            signaled(libc::SIGKILL)
        );
    }

    #[test]
    fn rlimit_cpu_signals_are_cpu_timeouts() {
        let cpu_limited = |exit, cpu| Facts {
            cpu_limit: Some(2 * SEC),
            ..facts(status(exit, cpu))
        };
        let timeout = |sig| {
            with(
                OutcomeReason::CpuTimeout,
                "CPU time limit of 2s exceeded",
                None,
                Some(sig),
            )
        };
        // SIGXCPU (the soft limit) whatever the measured time.
        assert_eq!(
            verdict(&cpu_limited(Exit::Signal(libc::SIGXCPU), Duration::ZERO)),
            timeout(libc::SIGXCPU)
        );
        // SIGKILL (the hard limit) once the job used 95 % of the limit…
        assert_eq!(
            verdict(&cpu_limited(
                Exit::Signal(libc::SIGKILL),
                Duration::from_millis(1900)
            )),
            timeout(libc::SIGKILL)
        );
        // …but not below: some other SIGKILL.
        assert_eq!(
            verdict(&cpu_limited(
                Exit::Signal(libc::SIGKILL),
                Duration::from_millis(1899)
            )),
            signaled(libc::SIGKILL)
        );
        // user + system both count.
        let mut f = cpu_limited(Exit::Signal(libc::SIGKILL), SEC);
        if let Ok(s) = &mut f.status {
            s.system = SEC;
        }
        assert_eq!(verdict(&f), timeout(libc::SIGKILL));
        // Other signals and exits are not CPU timeouts.
        assert_eq!(
            verdict(&cpu_limited(Exit::Signal(libc::SIGTERM), 5 * SEC)),
            signaled(libc::SIGTERM)
        );
        assert_eq!(
            verdict(&cpu_limited(Exit::Code(0), 5 * SEC)),
            Outcome::exited(0)
        );
    }

    #[test]
    fn limits_the_worker_enforced() {
        let killed = status(Exit::Signal(libc::SIGKILL), SEC);
        let stopped = |s: Stopped, st| Facts {
            stopped: Some(s),
            ..facts(st)
        };
        assert_eq!(
            verdict(&stopped(
                Stopped::WallTimeout(Duration::from_millis(1500)),
                killed
            )),
            with(
                OutcomeReason::WallTimeout,
                "wall time limit of 1.5s exceeded",
                None,
                Some(libc::SIGKILL)
            )
        );
        // The job exited by itself just as the limit fired: its exit code is kept.
        assert_eq!(
            verdict(&stopped(
                Stopped::OutputLimit("stdout exceeded 10 bytes".into()),
                status(Exit::Code(1), SEC)
            )),
            with(
                OutcomeReason::OutputLimit,
                "stdout exceeded 10 bytes",
                Some(1),
                None
            )
        );
        assert_eq!(
            verdict(&stopped(
                Stopped::CpuLimit {
                    limit: SEC,
                    used: Duration::from_millis(1010)
                },
                killed
            )),
            with(
                OutcomeReason::CpuTimeout,
                "CPU time limit of 1s exceeded: the job's processes used 1.01s in total",
                None,
                Some(libc::SIGKILL)
            )
        );
        // Cancelled during the setup: the init was killed before it reported anything.
        assert_eq!(
            verdict(&stopped(Stopped::Cancelled, Err(StatusError::Length(0)))),
            with(OutcomeReason::Cancelled, "cancelled", None, None)
        );
        assert_eq!(
            verdict(&stopped(
                Stopped::SetupTimeout(Duration::from_secs(120)),
                Err(StatusError::Length(0))
            )),
            with(
                OutcomeReason::InternalError,
                "container setup took longer than 120s",
                None,
                None
            )
        );
    }

    #[test]
    fn setup_errors() {
        let report = |kind, msg: &str| encode_error(&ChildError::new(kind, msg));
        let exec_failed = status(Exit::Code(127), Duration::ZERO);
        let spec = report(ErrorKind::Spec, "working directory `/x`: Not a directory");
        let f = Facts {
            error_report: &spec,
            ..facts(exec_failed)
        };
        // The job never ran: its 127 is not an exit code.
        assert_eq!(
            verdict(&f),
            with(
                OutcomeReason::SpecError,
                "working directory `/x`: Not a directory",
                None,
                None
            )
        );
        let nf = report(ErrorKind::NotFound, "nope");
        let f = Facts {
            error_report: &nf,
            ..facts(exec_failed)
        };
        assert_eq!(verdict(&f).reason, OutcomeReason::SpecError);
        let image = report(ErrorKind::Image, "/etc/passwd is a symlink");
        let f = Facts {
            error_report: &image,
            ..facts(exec_failed)
        };
        assert_eq!(
            verdict(&f),
            with(
                OutcomeReason::ImageError,
                "/etc/passwd is a symlink",
                Some(127),
                None
            )
        );
        let internal = report(ErrorKind::Internal, "setsid: Operation not permitted");
        let f = Facts {
            error_report: &internal,
            ..facts(exec_failed)
        };
        assert_eq!(
            verdict(&f),
            with(
                OutcomeReason::InternalError,
                "container setup failed: setsid: Operation not permitted",
                Some(127),
                None
            )
        );
        // The init failed before it became the helper: no status record at all.
        let f = Facts {
            error_report: &internal,
            ..facts(Err(StatusError::Length(0)))
        };
        assert_eq!(verdict(&f).exit_code, None);
        // A garbled report is an internal error that shows the bytes.
        let f = Facts {
            error_report: b"?odd",
            ..facts(exec_failed)
        };
        let o = verdict(&f);
        assert_eq!(o.reason, OutcomeReason::InternalError);
        assert!(o.detail.as_deref().unwrap().contains("0x3f: odd"), "{o:?}");
        // A limit that fired during the setup wins over the error the kill caused.
        let f = Facts {
            stopped: Some(Stopped::Cancelled),
            error_report: &internal,
            ..facts(exec_failed)
        };
        assert_eq!(verdict(&f).reason, OutcomeReason::Cancelled);
    }

    #[test]
    fn missing_or_garbled_status_is_an_internal_error() {
        let o = verdict(&facts(Err(StatusError::Length(0))));
        assert_eq!(
            o,
            with(
                OutcomeReason::InternalError,
                "the container's init ended without reporting the job's status",
                None,
                None
            )
        );
        let o = verdict(&facts(Err(StatusError::Length(5))));
        assert_eq!(o.reason, OutcomeReason::InternalError);
        assert!(o.detail.unwrap().contains("5 bytes"));
    }

    /// A start that failed at the memory limit without an OOM kill (the init and the job's
    /// process are never picked while on the worker's memory): an internal error with the peak
    /// at the limit is `memory_limit`; below the limit, or another reason, it stays what it was.
    #[test]
    fn an_internal_error_at_the_memory_limit_is_memory_limit() {
        let no_status = || facts(Err(StatusError::Length(0)));
        let at = |peak, f: Facts<'static>| Facts {
            memory_peak: Some(peak),
            ..f
        };
        let o = verdict(&at(64 << 20, no_status()));
        assert_eq!(o.reason, OutcomeReason::MemoryLimit, "{o:?}");
        assert_eq!(
            o.detail.as_deref(),
            Some(
                "memory limit of 67108864 bytes reached while the container started: the \
                 kernel refused an allocation of its setup (the container's init ended without \
                 reporting the job's status)"
            )
        );
        let report = encode_error(&ChildError::new(ErrorKind::Internal, "clone: ENOMEM"));
        let f = Facts {
            error_report: Box::leak(report.into_boxed_slice()),
            ..no_status()
        };
        assert_eq!(verdict(&at(64 << 20, f)).reason, OutcomeReason::MemoryLimit);
        // Below the limit, or unknown: still the internal error.
        assert_eq!(
            verdict(&at((64 << 20) - 4096, no_status())).reason,
            OutcomeReason::InternalError
        );
        assert_eq!(verdict(&no_status()).reason, OutcomeReason::InternalError);
        // Another reason at the limit (a job that exited, a spec error) is left alone.
        assert_eq!(
            verdict(&at(64 << 20, facts(status(Exit::Code(0), SEC)))).reason,
            OutcomeReason::Exited
        );
        // Except an exit with 127 (a command that could not be run) at the limit: its start
        // failed for lack of memory. Its exit code stays; below the limit it is an exit.
        let o = verdict(&at(64 << 20, facts(status(Exit::Code(127), SEC))));
        assert_eq!(o.reason, OutcomeReason::MemoryLimit, "{o:?}");
        assert_eq!(o.exit_code, Some(127));
        assert_eq!(
            verdict(&at((64 << 20) - 4096, facts(status(Exit::Code(127), SEC)))).reason,
            OutcomeReason::Exited
        );
        let spec = encode_error(&ChildError::new(ErrorKind::Spec, "no such user"));
        let f = Facts {
            error_report: Box::leak(spec.into_boxed_slice()),
            ..no_status()
        };
        assert_eq!(verdict(&at(64 << 20, f)).reason, OutcomeReason::SpecError);
    }

    #[test]
    fn an_oom_kill_overrides_everything_but_a_cancel() {
        let oom_detail = "memory limit of 67108864 bytes exceeded: the kernel OOM-killed 2 \
                          process(es) of the job";
        let oom = |f: Facts<'static>| Facts { oom_kills: 2, ..f };
        // The job itself was killed.
        assert_eq!(
            verdict(&oom(facts(status(Exit::Signal(libc::SIGKILL), SEC)))),
            with(
                OutcomeReason::MemoryLimit,
                oom_detail,
                None,
                Some(libc::SIGKILL)
            )
        );
        // A child was killed and the job exited 0: still a memory limit, the code kept.
        assert_eq!(
            verdict(&oom(facts(status(Exit::Code(0), SEC)))),
            with(OutcomeReason::MemoryLimit, oom_detail, Some(0), None)
        );
        // Over a CPU verdict, a wall timeout, an output limit and a setup error.
        let cpu = Facts {
            cpu_limit: Some(SEC),
            ..facts(status(Exit::Signal(libc::SIGXCPU), SEC))
        };
        assert_eq!(verdict(&oom(cpu)).reason, OutcomeReason::MemoryLimit);
        for s in [
            Stopped::WallTimeout(SEC),
            Stopped::OutputLimit("x".into()),
            Stopped::CpuLimit {
                limit: SEC,
                used: SEC,
            },
            Stopped::SetupTimeout(SEC),
        ] {
            let f = Facts {
                stopped: Some(s),
                ..facts(status(Exit::Signal(libc::SIGKILL), SEC))
            };
            assert_eq!(verdict(&oom(f)).reason, OutcomeReason::MemoryLimit);
        }
        let f = Facts {
            error_report: b"Sbad user",
            ..facts(status(Exit::Code(127), SEC))
        };
        assert_eq!(verdict(&oom(f)).reason, OutcomeReason::MemoryLimit);
        // Not over a cancel.
        let f = Facts {
            stopped: Some(Stopped::Cancelled),
            ..facts(status(Exit::Signal(libc::SIGKILL), SEC))
        };
        assert_eq!(
            verdict(&oom(f)),
            with(
                OutcomeReason::Cancelled,
                "cancelled",
                None,
                Some(libc::SIGKILL)
            )
        );
    }
}
