//! Read-back catches a target that changed between writing and verifying.
//!
//! Its own test binary: the test switch is an environment variable, which would
//! leak into other tests running in the same process.

mod support;

use meetbox::flash::run;
use support::flash::{assert_no_partition_table, signed_build, MIB};

#[test]
fn corruption_after_writing_is_caught_and_the_disk_made_unbootable() {
    let Some(build) = signed_build() else { return };
    let target = build.dir.path().join("corrupted.raw");
    // A byte inside the mapped data at 30 MiB (see the fixture's layout).
    std::env::set_var("MEETBOX_TEST_CORRUPT_AFTER_WRITE", (31 * MIB).to_string());
    let result = run(&build.args(&target));
    std::env::remove_var("MEETBOX_TEST_CORRUPT_AFTER_WRITE");
    let err = format!(
        "{:#}",
        result.expect_err("read-back must catch the corruption")
    );
    assert!(err.contains("read-back mismatch"), "{err}");
    assert!(err.contains("will not boot"), "{err}");
    assert_no_partition_table(
        &target,
        "a disk that failed read-back still has a partition table",
    );
}
