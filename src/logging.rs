//! Logging for every tokenback binary: slog, readable on a terminal, one JSON object a line
//! under systemd or with `--log-json` (DESIGN.md, "Decisions").
//!
//! A binary flattens [`LogArgs`] into its clap arguments and calls [`LogArgs::logger`] once;
//! library code takes a `slog::Logger` and adds its key-values (`domid`, a VBD) with `new`.

use std::io;

use slog::Drain;

/// The command-line options every binary shares.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct LogArgs {
    /// Log one JSON object a line instead of text (the default under systemd)
    #[arg(long)]
    pub log_json: bool,
    /// The least severe records written
    #[arg(long, value_enum, value_name = "LEVEL", default_value = "info")]
    pub log_level: Level,
}

/// How much is logged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Level {
    Error,
    Warning,
    #[default]
    Info,
    Debug,
    Trace,
}

impl From<Level> for slog::Level {
    fn from(level: Level) -> slog::Level {
        match level {
            Level::Error => slog::Level::Error,
            Level::Warning => slog::Level::Warning,
            Level::Info => slog::Level::Info,
            Level::Debug => slog::Level::Debug,
            Level::Trace => slog::Level::Trace,
        }
    }
}

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Aligned text, coloured on a terminal.
    Text,
    /// One JSON object a line.
    Json,
}

/// A root logger and what keeps its writer thread alive: records still queued are written
/// when the guard is dropped, so keep it until `main` returns.
pub struct Logging {
    /// The root logger; its records carry the binary's name as `bin`.
    pub logger: slog::Logger,
    _guard: slog_async::AsyncGuard,
}

impl LogArgs {
    /// The format asked for: JSON with `--log-json` or when stderr goes to the journal
    /// (systemd sets `JOURNAL_STREAM` for the service's standard streams), else text.
    pub fn format(&self) -> LogFormat {
        if self.log_json || std::env::var_os("JOURNAL_STREAM").is_some() {
            LogFormat::Json
        } else {
            LogFormat::Text
        }
    }

    /// A logger writing to stderr in the chosen format, from the chosen level up.
    pub fn logger(&self, bin: &'static str) -> Logging {
        logger(self.format(), self.log_level.into(), bin)
    }
}

/// A logger writing records of `level` and above to stderr in `format`, off the caller's
/// thread (a slow terminal or journal never stalls the event loop; records beyond the queue
/// are dropped and counted).
pub fn logger(format: LogFormat, level: slog::Level, bin: &'static str) -> Logging {
    let (drain, guard) = match format {
        LogFormat::Text => {
            let decorator = slog_term::TermDecorator::new().stderr().build();
            let text = slog_term::FullFormat::new(decorator).build().fuse();
            slog_async::Async::new(text).build_with_guard()
        }
        LogFormat::Json => {
            let json = slog_json::Json::new(io::stderr())
                .add_default_keys()
                .build()
                .fuse();
            slog_async::Async::new(json).build_with_guard()
        }
    };
    let drain = slog::LevelFilter::new(drain.fuse(), level).fuse();
    Logging {
        logger: slog::Logger::root(drain, slog::o!("bin" => bin)),
        _guard: guard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_json_asks_for_json_whatever_the_environment() {
        let args = LogArgs {
            log_json: true,
            ..LogArgs::default()
        };
        assert_eq!(args.format(), LogFormat::Json);
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        log: LogArgs,
    }

    #[test]
    fn log_level_defaults_to_info_and_takes_each_name() {
        use clap::Parser;
        assert_eq!(Cli::parse_from(["x"]).log.log_level, Level::Info);
        let cli = Cli::parse_from(["x", "--log-level", "debug"]);
        assert_eq!(slog::Level::from(cli.log.log_level), slog::Level::Debug);
        assert!(Cli::try_parse_from(["x", "--log-level", "loud"]).is_err());
    }
}
