//! The Linux container backend against the real kernel: namespaces, overlayfs, mounts, users,
//! limits, leftovers. Root only; a missing prerequisite fails (never skips).

mod container_support;
mod image_support;

use container_support::*;
use runtime_core::OutcomeReason;

#[tokio::test(flavor = "multi_thread")]
async fn exit_code_and_output() {
    let env = TestEnv::new();
    let img = env.busybox("basic", &[], default_config()).await;
    let ran = run(&env, sh(&img, "echo hi; exit 7")).await;
    ran.assert_exited(7);
    assert_eq!(ran.out(), "hi\n");
    let _ = OutcomeReason::Exited;
}
