//! Helpers shared by the end-to-end tests: the four programs (built by `cargo test --workspace`,
//! or built here when missing) and a working directory with a CA, a KEK and a simulator, ready for
//! `cvm-attest serve`. The parts themselves are `cvm_launch::demo::stack`, the same code the demo
//! runs.

use std::path::Path;
use std::sync::OnceLock;

use cvm_launch::demo::DEMO_SEED;
use cvm_launch::demo::programs::Programs;
use cvm_launch::demo::stack::{Stack, StackError};
use cvm_launch::kit::Kit;
use cvm_launch::probe::kvm_usable;
use std::io::Write as _;

/// The programs of this build (`target/debug` for `cargo test`), brought up to date with cargo
/// once per test process (`cargo test -p cvm-tests` alone does not rebuild the other packages).
pub fn programs() -> Programs {
    static BUILT: OnceLock<Programs> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = Programs::dir_of_current_exe().unwrap_or_else(|e| panic!("{e}"));
            Programs::build(&dir, "the cvm programs", &mut |m| eprintln!("{m}"))
                .unwrap_or_else(|e| panic!("{e}"))
                .programs
        })
        .clone()
}

/// A stack in `dir` with `pki/`, `kek`, and `sim/` (the demo's public seed).
pub fn prepared_stack(dir: &Path) -> Result<Stack, StackError> {
    let stack = Stack::new(programs(), dir);
    stack.create_pki()?;
    stack.keygen("kek")?;
    stack.create_sim(Some(DEMO_SEED))?;
    Ok(stack)
}

/// Whether guests run in VMs here; prints the reason once per test when they cannot.
pub fn guests_run_in_vms(test: &str) -> bool {
    match kvm_usable() {
        Ok(()) => true,
        Err(why) => {
            let _ = writeln!(
                std::io::stderr(),
                "{test}: no KVM ({why}): guests are served by the simulated PSP without a VM (no guest code runs)"
            );
            false
        }
    }
}

/// The guest kit (QEMU, busybox, cryptsetup, mke2fs and a guest kernel: `cvm-launch guest-kit`), or
/// `None` after printing a skip line that says what is missing and how to get it.
pub fn guest_kit(test: &str) -> Option<Kit> {
    let dir = Programs::dir_of_current_exe().unwrap_or_else(|e| panic!("{e}"));
    match cvm_launch::kit::find(&cvm_launch::kit::default_dir(&dir)) {
        Ok(kit) => Some(kit),
        Err(missing) => {
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test}: no Linux guest here: missing {missing} (`cvm-launch guest-kit --install` fetches it)"
            );
            None
        }
    }
}
