//! Facts about local processes: whether a lock holder or a mount daemon still runs.

/// Whether `pid` is a live process (not a zombie waiting to be reaped).
pub fn is_running(pid: u32) -> bool {
    start_time(pid).is_some()
}

/// A live process's start time (field 22 of /proc/PID/stat), to notice PID reuse; `None`
/// once it has exited, including as a zombie its parent has not reaped yet (a service
/// manager reaps it only after the stop command returns).
pub fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    if after_comm.starts_with('Z') || after_comm.starts_with('X') {
        return None;
    }
    after_comm.split(' ').nth(19).map(str::to_owned)
}
