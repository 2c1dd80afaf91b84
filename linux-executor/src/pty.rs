//! What the shim does with the pty master of a process created with a terminal
//! ([`crate::launch::Created::take_console`]): window-size ioctls, safe wrappers over
//! [`crate::sys`].

use std::io;
use std::os::fd::BorrowedFd;

/// `TIOCSWINSZ`: sets the window size of the terminal (on the master it applies to the
/// pair; the kernel sends SIGWINCH to the terminal's foreground process group).
pub fn set_window_size(tty: BorrowedFd<'_>, rows: u16, cols: u16) -> io::Result<()> {
    crate::sys::set_window_size(tty, rows, cols)
}

/// `TIOCGWINSZ`: the window size as (rows, columns).
pub fn window_size(tty: BorrowedFd<'_>) -> io::Result<(u16, u16)> {
    crate::sys::window_size(tty)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn the_size_set_on_a_master_is_the_slaves() {
        let pty = nix::pty::openpty(None, None).expect("openpty");
        set_window_size(pty.master.as_fd(), 33, 101).expect("TIOCSWINSZ");
        assert_eq!(
            window_size(pty.slave.as_fd()).expect("TIOCGWINSZ"),
            (33, 101)
        );
        let file = std::fs::File::open("/proc/self/stat").expect("open");
        assert!(
            set_window_size(file.as_fd(), 1, 1).is_err(),
            "not a terminal"
        );
    }
}
