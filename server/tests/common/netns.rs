//! Network namespaces for tests that set up interfaces and rules (CI runs
//! as root): the test body runs on a thread that unshared its network
//! namespace, and threads and processes it starts inherit it.
#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::process::Command;

/// Set to 1 (CI does) to make a missing tool or a missing root a failure
/// rather than a skip.
pub const REQUIRE_TOOLS: &str = "KUBEWIRE_REQUIRE_TOOLS";

/// What these tests need that this machine lacks, if anything.
fn missing_tools() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("they need root (network namespaces, nft, iptables)".into());
    }
    let missing: Vec<&str> = [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("iptables", "iptables"),
    ]
    .into_iter()
    .filter(|(program, _)| Command::new(program).arg("--version").output().is_err())
    .map(|(_, package)| package)
    .collect();
    (!missing.is_empty()).then(|| format!("install {} (apt-get install {0})", missing.join(" ")))
}

/// Runs `body` on a thread in a new, empty network namespace (loopback up).
/// Without root or the tools it skips with one line that says what to
/// install, unless [`REQUIRE_TOOLS`] is 1.
pub fn in_new_netns(body: impl FnOnce() + Send + 'static) {
    if let Some(missing) = missing_tools() {
        assert!(
            std::env::var(REQUIRE_TOOLS).ok().is_none_or(|v| v != "1"),
            "node-local tests: {missing} ({REQUIRE_TOOLS}=1 makes this a failure)"
        );
        // Straight to stderr, past the test harness's capture, so the skip
        // is seen.
        let _ = writeln!(std::io::stderr(), "skipped: {missing}");
        return;
    }
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
