//! Batch mode, like `xentop -b -d DELAY -i ITERATIONS`: a header and plain rows per
//! iteration for scripts, or one JSON document per iteration, one per line.

use std::io::{self, Write};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

use super::model::Filter;
use super::rates::Sampler;
use super::socket::{Daemon, SocketError};
use super::table::{self, Column, Kind, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Plain,
    Json,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub delay: Duration,
    /// None: until interrupted.
    pub iterations: Option<u64>,
    pub format: Format,
    pub sort: Column,
    pub descending: bool,
    pub filter: String,
}

#[derive(Debug, Error)]
pub enum BatchError {
    #[error(transparent)]
    Daemon(#[from] SocketError),
    #[error("writing the output: {0}")]
    Output(#[from] io::Error),
}

/// One iteration as JSON.
#[derive(Serialize)]
struct Document<'a> {
    /// The daemon's monotonic clock.
    now_ns: u64,
    daemon: Option<&'a str>,
    vbds: Vec<&'a Row>,
    groups: Vec<&'a Row>,
}

/// Prints `options.iterations` iterations `options.delay` apart; `sleep` waits (injected so
/// tests need not).
pub fn run(
    daemon: &mut Daemon,
    options: &Options,
    out: &mut dyn Write,
    mut sleep: impl FnMut(Duration),
) -> Result<(), BatchError> {
    let mut sampler = Sampler::default();
    let mut iteration = 0;
    while options.iterations.map_or(true, |n| iteration < n) {
        if iteration > 0 {
            sleep(options.delay);
        }
        let frame = sampler.observe(daemon.stats(&Filter::default())?);
        let mut rows = table::filter(table::rows(&frame), &options.filter);
        table::sort(&mut rows, options.sort, options.descending);
        match options.format {
            Format::Plain => write_plain(&rows, out)?,
            Format::Json => {
                let document = Document {
                    now_ns: frame.stats.now_ns,
                    daemon: daemon.version().map(|v| v.daemon.as_str()),
                    vbds: rows.iter().filter(|r| r.kind == Kind::Vbd).collect(),
                    groups: rows.iter().filter(|r| r.kind == Kind::Group).collect(),
                };
                serde_json::to_writer(&mut *out, &document).map_err(io::Error::from)?;
                writeln!(out)?;
            }
        }
        // Scripts reading a pipe see each iteration when it is made.
        out.flush()?;
        iteration += 1;
    }
    Ok(())
}

/// The header and one line per row, fields padded to line up, single words throughout.
fn write_plain(rows: &[Row], out: &mut dyn Write) -> io::Result<()> {
    let cells: Vec<Vec<String>> =
        std::iter::once(Column::ALL.iter().map(|c| c.header().to_owned()).collect())
            .chain(
                rows.iter()
                    .map(|row| Column::ALL.iter().map(|c| c.plain(row)).collect()),
            )
            .collect();
    let widths: Vec<usize> = (0..Column::ALL.len())
        .map(|i| cells.iter().map(|line| line[i].len()).max().unwrap_or(0))
        .collect();
    for line in cells {
        let padded: Vec<String> = line
            .iter()
            .zip(&widths)
            .map(|(cell, &w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", padded.join(" ").trim_end())?;
    }
    Ok(())
}
