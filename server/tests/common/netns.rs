//! Network namespaces for tests that set up interfaces and rules (CI runs
//! as root): the test body runs on a thread that unshared its network
//! namespace, and threads and processes it starts inherit it.
#![allow(dead_code, unreachable_pub)]

use std::process::Command;

/// Runs `body` on a thread in a new, empty network namespace (loopback up).
pub fn in_new_netns(body: impl FnOnce() + Send + 'static) {
    let result = std::thread::spawn(move || {
        // SAFETY: only the network namespace is unshared, never the file
        // descriptor table, so every thread keeps seeing the same fds.
        #[allow(unsafe_code)]
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .expect("unshare(CLONE_NEWNET): node-local tests need root");
        run("ip", &["link", "set", "lo", "up"]);
        body();
    })
    .join();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command in the current thread's namespace; its stdout. Panics
/// with its stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; install it (see .ci/run)"));
    assert!(
        output.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn try_run(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether this kernel can make dummy interfaces (some VM kernels cannot).
pub fn kernel_has_dummy() -> bool {
    let made = try_run("ip", &["link", "add", "kwprobe", "type", "dummy"]).is_some();
    if made {
        run("ip", &["link", "del", "kwprobe"]);
    }
    made
}

/// The interface kind to test with: dummy where the kernel has the
/// driver, else a bridge.
pub fn interface_kind() -> &'static str {
    if kernel_has_dummy() {
        "dummy"
    } else {
        "bridge"
    }
}
