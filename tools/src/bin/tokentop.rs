//! tokentop: a xentop-like view of tokenbackd's virtual disks and their QoS, read from its
//! control socket: interactive, in batch rows or JSON, or as Prometheus metrics over HTTP.

use std::io::IsTerminal;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tokenback_tools::top::batch::{self, Format};
use tokenback_tools::top::http::{self, Response};
use tokenback_tools::top::metrics;
use tokenback_tools::top::model::Filter;
use tokenback_tools::top::socket::{socket_path, Daemon};
use tokenback_tools::top::table::Column;
use tokenback_tools::top::tui::{self, parse_interval, App, DAEMON_TIMEOUT};

/// A xentop-like view of tokenbackd's virtual disks (VBDs) and throttle groups
///
/// Shows what each disk asks for, what it gets and what the limiter holds back: on an
/// interactive screen (press h there for its keys), in plain rows or JSON for scripts (-b,
/// --json), or as Prometheus metrics over HTTP (--metrics-listen). The columns and the
/// metrics are described in docs/tokentop.md.
#[derive(Debug, Parser)]
#[command(name = "tokentop", version)]
struct Args {
    /// Batch mode: plain rows for scripts, a header and one row per VBD and group each
    /// iteration (as xentop -b)
    #[arg(short = 'b', long)]
    batch: bool,
    /// Batch mode with one JSON document per iteration, one per line
    #[arg(long)]
    json: bool,
    /// Seconds between refreshes (screen) or iterations (batch), e.g. 2 or 0.5
    #[arg(short = 'd', long, value_name = "SECONDS", default_value = "1", value_parser = parse_interval)]
    delay: Duration,
    /// Iterations in batch mode [default: until interrupted]
    #[arg(short = 'i', long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    iterations: Option<u64>,
    /// tokenbackd's control socket [default: $RUNTIME_DIRECTORY/control.sock when set, else
    /// /run/tokenback/control.sock]
    #[arg(long, value_name = "PATH", conflicts_with = "sim")]
    socket: Option<PathBuf>,
    /// A simulated host's run directory (tokenback-sim --dir DIR): the socket of the
    /// tokenbackd serving it
    #[arg(long, value_name = "DIR")]
    sim: Option<PathBuf>,
    /// The column to sort by (its header: DOMID, NAME, RD_IOPS, USE, ...)
    #[arg(long, value_name = "COLUMN", default_value = "DOMID", value_parser = parse_column)]
    sort: Column,
    /// Sort in descending order
    #[arg(long)]
    descending: bool,
    /// Only the VBDs of this domain (a domid or part of a name) and their groups
    #[arg(long, value_name = "DOMAIN")]
    filter: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics instead of showing anything (e.g.
    /// 127.0.0.1:9777; port 0 picks a free one, printed at start)
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["batch", "json"])]
    metrics_listen: Option<String>,
    /// Print the manual page (roff) and exit; docs/tokentop.1 is its output
    #[arg(long, hide = true)]
    man_page: bool,
}

fn parse_column(name: &str) -> Result<Column, String> {
    Column::from_header(name).ok_or_else(|| {
        let names: Vec<&str> = Column::ALL.iter().map(|c| c.header()).collect();
        format!("`{name}` is not a column; the columns: {}", names.join(" "))
    })
}

fn main() -> ExitCode {
    // clap prints usage errors and --help itself, with exit codes 2 and 0.
    let args = Args::parse();
    if args.man_page {
        // Section 1: a user command (man-pages(7)).
        let man = clap_mangen::Man::new(Args::command()).section("1");
        return report(man.render(&mut std::io::stdout()));
    }
    let path = socket_path(args.socket.as_deref(), args.sim.as_deref());
    let mut daemon = Daemon::new(path, DAEMON_TIMEOUT);
    if let Some(addr) = &args.metrics_listen {
        return serve_metrics(addr, daemon);
    }
    if args.batch || args.json {
        let options = batch::Options {
            delay: args.delay,
            iterations: args.iterations,
            format: if args.json {
                Format::Json
            } else {
                Format::Plain
            },
            sort: args.sort,
            descending: args.descending,
            filter: args.filter.unwrap_or_default(),
        };
        let out = &mut std::io::stdout().lock();
        return report(batch::run(&mut daemon, &options, out, std::thread::sleep));
    }
    if !(std::io::stdin().is_terminal() && std::io::stdout().is_terminal()) {
        return report(Err(
            "the screen needs a terminal: use -b or --json for scripts",
        ));
    }
    let filter = args.filter.unwrap_or_default();
    let app = App::new(daemon, args.delay, args.sort, args.descending, filter);
    report(tui::run(app))
}

fn serve_metrics(addr: &str, mut daemon: Daemon) -> ExitCode {
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(e) => return report(Err(format!("cannot listen on {addr}: {e}"))),
    };
    match listener.local_addr() {
        Ok(bound) => eprintln!(
            "tokentop: serving metrics of {} at http://{bound}/metrics",
            daemon.path().display()
        ),
        Err(e) => return report(Err(e)),
    }
    let scrape = || {
        // A daemon that is gone is a sample (tokenback_up 0), not a failed scrape.
        let stats = daemon.stats(&Filter::default());
        if let Err(e) = &stats {
            eprintln!("tokentop: {e}");
        }
        let version = daemon.version().map(|v| v.daemon.clone());
        Response {
            status: "200 OK",
            content_type: metrics::CONTENT_TYPE,
            body: metrics::render(stats.as_ref().ok(), version.as_deref()),
        }
    };
    http::serve(&listener, Duration::from_secs(5), scrape, |e| {
        eprintln!("tokentop: a metrics client: {e}");
    });
    ExitCode::SUCCESS
}

fn report<E: std::fmt::Display>(result: Result<(), E>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokentop: {e}");
            ExitCode::FAILURE
        }
    }
}
