//! `commcenterctl`: the operators' command line. Everything lives in
//! [`commcenter_ctl`]; `commcenterctl --help` lists the commands and exit codes.

use std::io::IsTerminal;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let err_is_terminal = stderr.is_terminal();
    let exit = commcenter_ctl::run(
        std::env::args_os(),
        commcenter_ctl::Io {
            out: &mut stdout,
            err: &mut stderr,
            err_is_terminal,
        },
    )
    .await;
    std::process::ExitCode::from(exit.code())
}
