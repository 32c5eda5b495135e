//! The logger of every tool: env_logger's output format behind a filter that a mount
//! can change at run time (`s3fsctrl log LEVEL [MODULE…]`), which env_logger's own
//! filters cannot.

use std::sync::RwLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::{LevelFilter, Log, Metadata, Record};

/// Our crate's log target prefix.
const CRATE: &str = "s3fs";

struct Filter {
    /// Level for our own modules (as `LevelFilter as usize`).
    level: AtomicUsize,
    /// Modules (below `s3fs::`) logged at debug level whatever `level` says.
    debug_modules: RwLock<Vec<String>>,
}

static FILTER: Filter = Filter {
    level: AtomicUsize::new(LevelFilter::Info as usize),
    debug_modules: RwLock::new(Vec::new()),
};

struct RuntimeLogger {
    /// Formats and writes; lets everything of ours through (the filter decides).
    inner: env_logger::Logger,
}

fn ours(target: &str) -> bool {
    target == CRATE || target.starts_with("s3fs::")
}

fn level_from(n: usize) -> LevelFilter {
    LevelFilter::iter().nth(n).unwrap_or(LevelFilter::Info)
}

impl Log for RuntimeLogger {
    fn enabled(&self, m: &Metadata) -> bool {
        if !ours(m.target()) {
            return self.inner.enabled(m);
        }
        if m.level() <= level_from(FILTER.level.load(Ordering::Relaxed)) {
            return true;
        }
        m.level() <= log::Level::Debug && {
            let modules = FILTER.debug_modules.read().unwrap_or_else(|e| e.into_inner());
            modules.iter().any(|module| {
                let rest = &m.target()[CRATE.len()..];
                let rest = rest.strip_prefix("::").unwrap_or(rest);
                rest == module || rest.starts_with(&format!("{module}::"))
            })
        }
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Install the logger: our modules at `level`, other crates at warn (fuser at error).
pub fn init(level: LevelFilter, target: Option<Box<dyn std::io::Write + Send>>) {
    let mut builder = env_logger::Builder::new();
    builder
        .filter_level(LevelFilter::Warn)
        .filter_module(CRATE, LevelFilter::Trace)
        // fuser warns about its own second unmount attempt after an external unmount.
        .filter_module("fuser", LevelFilter::Error)
        .format_target(false);
    match target {
        Some(w) => builder.target(env_logger::Target::Pipe(w)).format_timestamp_millis(),
        None => builder.format_timestamp(None),
    };
    FILTER.level.store(level as usize, Ordering::Relaxed);
    let logger = RuntimeLogger { inner: builder.build() };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level.max(LevelFilter::Warn));
    }
}

/// Change what is logged: `level` for all our modules, and debug messages of `modules`
/// (names below `s3fs::`, e.g. `cache` or `store::s3`; `all` means every module).
pub fn set_level(level: LevelFilter, modules: &[String]) {
    let all = modules.iter().any(|m| m == "all");
    let level = if all && level < LevelFilter::Debug {
        LevelFilter::Debug
    } else {
        level
    };
    FILTER.level.store(level as usize, Ordering::Relaxed);
    let mut debug = FILTER.debug_modules.write().unwrap_or_else(|e| e.into_inner());
    *debug = if all { Vec::new() } else { modules.to_vec() };
    // The global maximum makes disabled messages cost one comparison.
    let needed = if debug.is_empty() {
        level
    } else {
        level.max(LevelFilter::Debug)
    };
    log::set_max_level(needed.max(LevelFilter::Warn));
}

/// The level in force for our modules.
pub fn level() -> LevelFilter {
    level_from(FILTER.level.load(Ordering::Relaxed))
}

/// Parse a level name as the tools accept it.
pub fn parse_level(s: &str) -> Option<LevelFilter> {
    match s.to_ascii_lowercase().as_str() {
        "debug" => Some(LevelFilter::Debug),
        "info" => Some(LevelFilter::Info),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "error" => Some(LevelFilter::Error),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_and_indexes_round_trip() {
        for l in LevelFilter::iter() {
            assert_eq!(level_from(l as usize), l);
        }
        assert_eq!(parse_level("WARNING"), Some(LevelFilter::Warn));
        assert_eq!(parse_level("loud"), None);
    }
}
