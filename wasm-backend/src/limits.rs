//! Per-job resource limits enforced from inside the `Store`: memory and tables through a
//! [`ResourceLimiter`], and the typed errors that stop a guest (and that the classifier recognises).

use std::time::Duration;

use wasmtime::ResourceLimiter;

/// Bytes a table element costs (wasmtime stores one pointer per element).
const TABLE_ELEMENT_BYTES: u64 = 8;

/// The job tried to grow its linear memory or tables past its memory limit. Returned from the
/// limiter, it traps the guest; the classifier turns it into `memory_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "the job asked for {requested} bytes of {what}, which would bring its memory to {total} bytes, \
     over its limit of {limit} bytes"
)]
pub(crate) struct MemoryLimitExceeded {
    /// "linear memory" or "table elements".
    pub what: &'static str,
    /// Bytes the refused growth would have added.
    pub requested: u64,
    /// Memory (linear memory and tables) the job would have had.
    pub total: u64,
    pub limit: u64,
}

/// Why the host stopped a running guest (raised from the epoch callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stop {
    #[error("the job was cancelled")]
    Cancelled,
    #[error("the job ran past its wall time limit of {0:?}")]
    WallTimeout(Duration),
}

/// Tracks and limits a job's linear memories and tables.
///
/// Growth past the job's limit is refused with a [`MemoryLimitExceeded`] error (a trap), not by
/// making `memory.grow` return -1: a guest that ignores a failed allocation would otherwise end in
/// some unrelated trap and the verdict would be wrong. Growth past a memory's own declared maximum
/// fails the normal way (-1), as the Wasm specification says.
///
/// The peaks are high-water marks of growth that happened: wasmtime asks the limiter *before* it
/// grows, and reports a failed growth afterwards (`*_grow_failed`, which takes the grant back), so
/// a grant only counts toward a peak once the next growth is asked for or the peak is read. The
/// reported peak of a guest that starts with `i` pages and grows `n` more is exactly
/// `(i + n) * 65536`, however the growth ends.
#[derive(Debug)]
pub(crate) struct JobLimiter {
    limit: u64,
    memory_bytes: u64,
    table_bytes: u64,
    memory_peak: u64,
    total_peak: u64,
    /// Bytes granted by the last approved growth, taken back if wasmtime then fails to grow.
    last_memory_grant: u64,
    last_table_grant: u64,
    /// Core instances the job may create: 1 for a core module, a few for a component.
    instances: usize,
}

impl JobLimiter {
    pub(crate) fn new(limit: u64, instances: usize) -> Self {
        Self {
            limit,
            instances,
            memory_bytes: 0,
            table_bytes: 0,
            memory_peak: 0,
            total_peak: 0,
            last_memory_grant: 0,
            last_table_grant: 0,
        }
    }

    /// The largest total linear memory the job reached, in bytes.
    pub(crate) fn memory_peak(&self) -> u64 {
        self.memory_peak.max(self.memory_bytes)
    }

    /// The largest linear memory plus table size the job reached, in bytes.
    pub(crate) fn total_peak(&self) -> u64 {
        self.total_peak
            .max(self.memory_bytes.saturating_add(self.table_bytes))
    }

    /// Counts the current sizes (every grant so far has either happened or been taken back)
    /// toward the peaks.
    fn settle_peaks(&mut self) {
        self.memory_peak = self.memory_peak();
        self.total_peak = self.total_peak();
    }

    fn grant(&mut self, what: &'static str, requested: u64) -> wasmtime::Result<u64> {
        let total = self
            .memory_bytes
            .saturating_add(self.table_bytes)
            .saturating_add(requested);
        if total > self.limit {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                what,
                requested,
                total,
                limit: self.limit,
            }));
        }
        Ok(requested)
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

impl ResourceLimiter for JobLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.last_memory_grant = 0;
        self.settle_peaks();
        if maximum.is_some_and(|max| desired > max) {
            // Past the memory's declared maximum (or the pool's ceiling): `memory.grow` returns -1.
            return Ok(false);
        }
        let requested = to_u64(desired.saturating_sub(current));
        let granted = self.grant("linear memory", requested)?;
        self.memory_bytes += granted;
        self.last_memory_grant = granted;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!(error = %crate::classify::render_error(&error), "wasm memory growth failed");
        self.memory_bytes = self.memory_bytes.saturating_sub(self.last_memory_grant);
        self.last_memory_grant = 0;
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.last_table_grant = 0;
        self.settle_peaks();
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let requested = to_u64(desired.saturating_sub(current)).saturating_mul(TABLE_ELEMENT_BYTES);
        let granted = self.grant("table elements", requested)?;
        self.table_bytes += granted;
        self.last_table_grant = granted;
        Ok(true)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        tracing::debug!(error = %crate::classify::render_error(&error), "wasm table growth failed");
        self.table_bytes = self.table_bytes.saturating_sub(self.last_table_grant);
        self.last_table_grant = 0;
        Ok(())
    }

    fn instances(&self) -> usize {
        // A WASI preview 1 command is exactly one core instance; a component a few (see
        // `engine::CORE_INSTANCES_PER_COMPONENT`).
        self.instances
    }

    fn tables(&self) -> usize {
        // Rust and C toolchains emit one table; reference-types programs may declare a few more.
        16
    }

    fn memories(&self) -> usize {
        // The pool allows one memory per module (and per component); on-demand engines get the
        // same rule.
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_up_to_the_limit_and_refuses_beyond_with_a_typed_error() {
        let mut l = JobLimiter::new(3 * 65536, 1);
        assert!(l.memory_growing(0, 2 * 65536, None).unwrap());
        assert!(l.memory_growing(2 * 65536, 3 * 65536, None).unwrap());
        let err = l.memory_growing(3 * 65536, 4 * 65536, None).unwrap_err();
        let e = err.downcast_ref::<MemoryLimitExceeded>().unwrap();
        assert_eq!(e.limit, 3 * 65536);
        assert_eq!(l.memory_peak(), 3 * 65536);
        // Past a declared maximum the guest just sees -1.
        assert!(!l.memory_growing(65536, 2 * 65536, Some(65536)).unwrap());
    }

    #[test]
    fn tables_count_against_the_same_budget() {
        let mut l = JobLimiter::new(1000, 1);
        assert!(l.table_growing(0, 100, None).unwrap());
        assert_eq!(l.total_peak(), 800);
        assert!(l.table_growing(100, 200, None).is_err());
        l.table_grow_failed(wasmtime::Error::msg("x")).unwrap();
    }

    #[test]
    fn peaks_count_only_growth_that_happened() {
        let mut l = JobLimiter::new(10 * 65536, 1);
        assert!(l.memory_growing(0, 2 * 65536, None).unwrap());
        assert!(l.table_growing(0, 10, None).unwrap());
        assert_eq!(
            (l.memory_peak(), l.total_peak()),
            (2 * 65536, 2 * 65536 + 80)
        );
        // Approved by the limiter, then wasmtime could not grow (mmap failed...): not a peak.
        assert!(l.memory_growing(2 * 65536, 6 * 65536, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("mmap")).unwrap();
        assert!(l.table_growing(10, 1000, None).unwrap());
        l.table_grow_failed(wasmtime::Error::msg("alloc")).unwrap();
        assert_eq!(
            (l.memory_peak(), l.total_peak()),
            (2 * 65536, 2 * 65536 + 80)
        );
        // The next growth that happens is counted.
        assert!(l.memory_growing(2 * 65536, 3 * 65536, None).unwrap());
        assert!(l.memory_growing(3 * 65536, 4 * 65536, None).unwrap());
        assert_eq!(
            (l.memory_peak(), l.total_peak()),
            (4 * 65536, 4 * 65536 + 80)
        );
    }
}
