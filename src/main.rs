//! The `illume` command-line interface.

mod cli;

fn main() -> std::process::ExitCode {
    // Behave like other command-line tools when the reader goes away (`illume ... | head`):
    // end quietly instead of panicking on a broken pipe.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cli::main()
}
