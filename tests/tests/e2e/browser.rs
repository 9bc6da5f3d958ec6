//! Browser tests (`tests/browser/*.spec.mjs`): run in Node with Debian's Chromium
//! through playwright-core, each driven by the Rust test that set up its data.

use std::{path::Path, process::Stdio, time::Duration};

/// Fails (never skips) when a browser test cannot run here, saying how to fix it;
/// answers the browser's path.
fn prerequisites(dir: &Path) -> String {
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "Node.js is needed for the browser tests: apt-get install -y nodejs npm"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is needed for the browser tests ({chromium} is missing): \
         apt-get install -y chromium (or set CHROMIUM to the browser's path)"
    );
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "playwright-core is not installed: npm ci --prefix tests/browser"
    );
    chromium
}

/// Runs `tests/browser/{spec}` with `env` within `timeout`, and fails with everything it
/// printed unless it passes; answers its standard output.
pub async fn run_spec(spec: &str, env: &[(&str, String)], timeout: Duration) -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    let chromium = prerequisites(&dir);
    let run = tokio::process::Command::new("node")
        .arg(dir.join(spec))
        .current_dir(&dir)
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .env("CHROMIUM", chromium)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, run)
        .await
        .unwrap_or_else(|_| panic!("{spec} did not finish within {timeout:?}"))
        .expect("node starts");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{spec} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}
