//! The per-turn supervisor: a small process between the inbox and an agent that is a subreaper
//! (`PR_SET_CHILD_SUBREAPER`), so every process of the agent's session ends with its turn,
//! including those that left its process group with `setsid`.
//!
//! It is made by [`install`] in the agent's `pre_exec` hook: the forked child forks once more;
//! the grandchild execs the agent in a process group of its own, and the child stays behind as
//! the supervisor. An orphan of the agent's session is reparented to the supervisor instead of
//! init, so it can always find them: its children. When the agent exits, the supervisor kills
//! what is left (SIGKILL, child by child, until it has none), then exits with the agent's own
//! status (re-raising its signal), which is what the inbox's `wait` sees. A SIGTERM to the
//! supervisor (a timeout, a cancel, a stop) is passed on to the agent's group and to every other
//! process it has; after `kill_grace` it kills them all. If the inbox itself is killed, the
//! supervisor and its agent go on (a later attempt's token supersedes the agent's).
//!
//! The inbox itself is not the subreaper: orphans reaped by it would take exit statuses that
//! tokio's child handling waits for. Linux only; elsewhere the agent runs in its process group
//! alone (README: "Agents and their processes").
//!
//! Everything here runs between `fork` and `exec` of a multithreaded process, or in the
//! supervisor that never execs: only async-signal-safe system calls, no allocation, no locks.
//! It is the one module allowed `unsafe` (the crate denies it elsewhere): a `pre_exec` hook and
//! raw system calls are what a supervisor between fork and exec takes.
#![allow(
    unsafe_code,
    reason = "fork in a pre_exec hook and raw system calls in the supervisor"
)]

use nix::libc;

/// How long the supervisor sleeps at most between looks (a backstop: signals wake it).
const TICK: libc::timespec = libc::timespec {
    tv_sec: 1,
    tv_nsec: 0,
};

/// Runs `cmd`'s program under a supervisor (see the module's docs) that kills what ignores
/// SIGTERM `kill_grace` after passing it on.
pub(crate) fn supervised(cmd: &mut tokio::process::Command, kill_grace: std::time::Duration) {
    let grace = u32::try_from(kill_grace.as_secs().max(1)).unwrap_or(u32::MAX);
    // SAFETY: `install` makes only async-signal-safe system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || install(grace));
    }
}

/// Makes the calling (freshly forked) process the agent's supervisor, unless it is the agent:
/// returns `Ok(())` in the agent, which then execs; never returns in the supervisor.
///
/// # Safety
/// Call only in a `pre_exec` hook (after `fork`, before `exec`).
unsafe fn install(kill_grace_secs: u32) -> std::io::Result<()> {
    // SAFETY: plain system calls on this process.
    unsafe {
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            // No subreaper (an old kernel, a sandbox): the agent runs without a supervisor,
            // in the inbox's process group for it, as before.
            return Ok(());
        }
        let agent = libc::fork();
        if agent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if agent == 0 {
            // The agent: a group of its own, which the supervisor signals.
            libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
            libc::setpgid(0, 0);
            return Ok(());
        }
        supervise(agent, kill_grace_secs)
    }
}

/// The supervisor's life: wait for the agent, pass on a stop, sweep, exit as the agent did.
///
/// The signals it acts on are blocked and taken with `sigtimedwait`, so none is lost between a
/// look and a wait (and no handler runs in this process).
unsafe fn supervise(agent: libc::pid_t, kill_grace_secs: u32) -> ! {
    // SAFETY: system calls on this process and its children; the buffers are on the stack.
    unsafe {
        // The spawn's error pipe (and every other inherited descriptor but stdio) must close:
        // the inbox learns the agent started when the agent's exec closes its copy.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [
            libc::SIGTERM,
            libc::SIGINT,
            libc::SIGHUP,
            libc::SIGALRM,
            libc::SIGCHLD,
        ] {
            libc::sigaddset(&mut set, sig);
        }
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        let mut passed_on = false;
        let status = 'waiting: loop {
            loop {
                let mut status: libc::c_int = 0;
                let pid = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if pid == agent {
                    break 'waiting status;
                }
                if pid <= 0 {
                    break;
                }
                // An orphan of the session, reaped.
            }
            match libc::sigtimedwait(&set, std::ptr::null_mut(), &TICK) {
                libc::SIGTERM | libc::SIGINT | libc::SIGHUP if !passed_on => {
                    passed_on = true;
                    libc::kill(-agent, libc::SIGTERM);
                    each_child(|pid| {
                        if pid != agent {
                            libc::kill(pid, libc::SIGTERM);
                        }
                    });
                    libc::alarm(kill_grace_secs.max(1));
                }
                libc::SIGALRM => {
                    libc::kill(-agent, libc::SIGKILL);
                    each_child(|pid| {
                        libc::kill(pid, libc::SIGKILL);
                    });
                }
                // A child changed state, a repeated stop, or the tick: look again.
                _ => {}
            }
        };
        // The agent has ended: so does everything it left behind.
        libc::kill(-agent, libc::SIGKILL);
        loop {
            each_child(|pid| {
                libc::kill(pid, libc::SIGKILL);
            });
            let mut ignored: libc::c_int = 0;
            if libc::waitpid(-1, &mut ignored, 0) < 0 && *libc::__errno_location() == libc::ECHILD {
                break;
            }
        }
        libc::alarm(0);
        if libc::WIFSIGNALED(status) {
            // Exit as the agent did: by its signal, which the inbox records.
            let sig = libc::WTERMSIG(status);
            libc::signal(sig, libc::SIG_DFL);
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig);
        }
        libc::_exit(libc::WEXITSTATUS(status))
    }
}

/// Calls `f` with each child of this process (from `/proc/thread-self/children`: the supervisor
/// has one thread).
unsafe fn each_child(mut f: impl FnMut(libc::pid_t)) {
    // SAFETY: a read into a stack buffer of a file this process may read.
    unsafe {
        let fd = libc::open(
            c"/proc/thread-self/children".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return;
        }
        let mut buf = [0u8; 8192];
        let mut len = 0usize;
        while len < buf.len() {
            let n = libc::read(fd, buf[len..].as_mut_ptr().cast(), buf.len() - len);
            if n <= 0 {
                break;
            }
            len += n as usize;
        }
        libc::close(fd);
        let mut pid: libc::pid_t = 0;
        let mut digits = false;
        for &b in &buf[..len] {
            if b.is_ascii_digit() {
                pid = pid
                    .saturating_mul(10)
                    .saturating_add(libc::pid_t::from(b - b'0'));
                digits = true;
            } else {
                if digits && pid > 0 {
                    f(pid);
                }
                pid = 0;
                digits = false;
            }
        }
        if digits && pid > 0 {
            f(pid);
        }
    }
}
