//! A system call allow-list, installed once start-up is done (the BPF programs loaded, the port
//! bound, capabilities dropped, every thread started): what a compromised service could still do
//! is limited to what the running service needs: reading /proc and the BPF maps, serving its
//! connections, managing its memory and threads. It can no longer execute programs, open new
//! sockets or connect anywhere, load BPF programs, mount, ptrace, change namespaces or
//! credentials. Any other call fails with EPERM (rather than killing the service: a call missed
//! here degrades one operation and is logged as its error, it does not take the host's
//! monitoring down).
//!
//! The list was taken from tracing the service in both tracker modes, with and without TLS,
//! over HTTP/1.1 and HTTP/2, through the eBPF tracker's fall-back to the /proc scan and through
//! shutdown; `tests::forbidden_calls_are_refused` checks the filter in a child process.

use std::collections::BTreeMap;

use anyhow::Context;
use seccompiler::{BpfProgram, SeccompAction, SeccompFilter};
use tracing::info;

/// What the running service calls. Start-up-only calls (bind, listen, socket, perf_event_open,
/// mount, setns, capset, prctl's capability operations…) are deliberately absent.
const ALLOWED: &[libc::c_long] = &[
    // Files: /proc, /sys/fs/cgroup, the BPF maps' descriptors.
    libc::SYS_read,
    libc::SYS_pread64,
    libc::SYS_readv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_bpf,
    // Connections.
    libc::SYS_accept4,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_setsockopt,
    libc::SYS_getsockopt,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_ppoll,
    // Memory.
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    // Threads (the runtime's blocking pool starts threads on demand), time, signals.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_setpriority,
    libc::SYS_prctl,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_restart_syscall,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_getrandom,
    libc::SYS_getpid,
    libc::SYS_gettid,
    libc::SYS_tgkill,
    libc::SYS_uname,
    libc::SYS_exit,
    libc::SYS_exit_group,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
];

/// The compiled filter: the calls above are allowed, any other fails with EPERM.
pub fn program() -> anyhow::Result<BpfProgram> {
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        ALLOWED.iter().map(|&call| (call, Vec::new())).collect();
    let arch: seccompiler::TargetArch = std::env::consts::ARCH
        .try_into()
        .with_context(|| format!("no system call filter for {}", std::env::consts::ARCH))?;
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the filter on every thread of the process (needs no-new-privileges, set when the
/// capabilities were dropped, or CAP_SYS_ADMIN).
pub fn install() -> anyhow::Result<()> {
    seccompiler::apply_filter_all_threads(&program()?)?;
    info!(
        allowed = ALLOWED.len(),
        "system call filter installed: other calls fail with EPERM"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a forked child (one thread, so the test binary's other threads are untouched): with
    /// the filter, execve, socket and ptrace fail with EPERM while allowed calls work.
    #[test]
    fn forbidden_calls_are_refused() {
        let program = program().unwrap();
        // Were execve allowed, `false` would exit 1 and fail the test.
        let path = c"/bin/false";
        let argv = [path.as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        // SAFETY: the child makes only raw system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = unsafe {
                let errno = || *libc::__errno_location();
                if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                    || seccompiler::apply_filter(&program).is_err()
                {
                    libc::_exit(10);
                }
                if libc::getpid() <= 0 {
                    libc::_exit(11);
                }
                let fd = libc::openat(libc::AT_FDCWD, c"/proc/self/stat".as_ptr(), libc::O_RDONLY);
                if fd < 0 {
                    libc::_exit(12);
                }
                libc::close(fd);
                if libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) != -1 || errno() != libc::EPERM
                {
                    libc::_exit(13);
                }
                // No such pid: without the filter this fails with ESRCH instead.
                if libc::ptrace(libc::PTRACE_ATTACH, libc::pid_t::MAX, 0, 0) != -1
                    || errno() != libc::EPERM
                {
                    libc::_exit(14);
                }
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                // Reached only when execve failed.
                if errno() != libc::EPERM {
                    libc::_exit(15);
                }
                0
            };
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(
            libc::WIFEXITED(status),
            "the child died: status {status:#x}"
        );
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "10: install failed, 11/12: an allowed call failed, 13: socket, 14: ptrace, 15: execve \
             was not refused with EPERM"
        );
    }
}
