//! tokenback-sim: tokenback on a simulated Xen host, guests doing verified I/O through
//! tokenbackd with the limits each disk is given.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokenback_tools::sim::spec::parse_duration;
use tokenback_tools::sim::{self, DiskSpec, Placement, RunConfig};

/// Runs tokenbackd on a simulated Xen host with guests doing verified I/O.
#[derive(Debug, Parser)]
#[command(name = "tokenback-sim", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Three guests with different limits (unlimited, 2000 read IOPS cut to 500 half way
    /// with xenstore-write, 8 MiB/s), each disk's rate following its limit (the default)
    Demo {
        #[command(flatten)]
        common: Common,
    },
    /// Disks of your own
    Run {
        /// A disk: size=256M,rw=randread,bs=4k,qd=16,guest=NAME,verify=1, QoS keys of
        /// docs/qos.md (iops-read=2000, bps-total=8388608, tokens-refill=..) and
        /// retune-at=TIME:KEY=VALUE
        #[arg(long = "disk", value_name = "SPEC", required_unless_present = "xl_disks", value_parser = DiskSpec::parse)]
        disks: Vec<DiskSpec>,
        /// A disk as an xl domain config's disk line, e.g. `vdev=xvda, access=rw,
        /// script=block-tokenback, target=/srv/guest.img?iops-read=500`: the toolstack writes
        /// its nodes and runs its hotplug script as libxl does; the guest does random I/O
        #[arg(long = "xl-disk", value_name = "LINE", value_parser = DiskSpec::from_xl_line)]
        xl_disks: Vec<DiskSpec>,
        /// Where scripts named by script= are (default /etc/xen/scripts if block-tokenback
        /// is installed there, else the source tree's xl-scripts)
        #[arg(long, value_name = "DIR")]
        script_dir: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
struct Common {
    /// How long the workloads run (e.g. 10s, 2500ms)
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    duration: Option<Duration>,
    /// The run directory (default: a fresh one in the temporary directory)
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the run directory (logs, disk images) afterwards
    #[arg(long)]
    keep: bool,
    /// Print the results as JSON instead of tables
    #[arg(long)]
    json: bool,
    /// The tokenbackd to run (default: the one beside tokenback-sim)
    #[arg(long, value_name = "PATH")]
    tokenbackd: Option<PathBuf>,
    /// tokenbackd's storage engine
    #[arg(long, value_name = "ENGINE", default_value = "threads", value_parser = ["uring", "threads", "null"])]
    io_engine: String,
    /// tokenbackd's worker threads
    #[arg(long, value_name = "N", default_value_t = 2)]
    workers: u16,
    /// How long a disk may take to connect
    #[arg(long, value_name = "TIME", default_value = "20s", value_parser = parse_time)]
    connect_timeout: Duration,
    /// Pin the guests to one CPU and tokenbackd to another (e.g. 0,1)
    #[arg(long, value_name = "GUEST_CPU,DAEMON_CPU", value_parser = parse_placement)]
    pin: Option<Placement>,
}

fn parse_time(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("`{text}` is not a time such as 10s or 2500ms"))
}

fn parse_placement(text: &str) -> Result<Placement, String> {
    let (guests, daemon) = text
        .split_once(',')
        .and_then(|(g, d)| Some((g.trim().parse().ok()?, d.trim().parse().ok()?)))
        .ok_or_else(|| format!("`{text}` is not two CPU numbers such as 0,1"))?;
    Ok(Placement { guests, daemon })
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (disks, script_dir, common) = match args.command {
        Some(Cmd::Run {
            mut disks,
            xl_disks,
            script_dir,
            common,
        }) => {
            disks.extend(xl_disks);
            (disks, script_dir, common)
        }
        Some(Cmd::Demo { common }) => (Vec::new(), None, common),
        None => (Vec::new(), None, Common::parse_defaults()),
    };
    let duration = common
        .duration
        .unwrap_or(Duration::from_secs(if disks.is_empty() { 12 } else { 10 }));
    let disks = if disks.is_empty() {
        sim::demo_disks(duration)
    } else {
        disks
    };
    // Null storage keeps no data: nothing to verify.
    let disks = disks
        .into_iter()
        .map(|mut d| {
            d.verify &= common.io_engine != "null";
            d
        })
        .collect();
    let config = RunConfig {
        disks,
        duration,
        dir: common.dir,
        keep: common.keep,
        tokenbackd: common.tokenbackd,
        io_engine: common.io_engine,
        workers: common.workers,
        connect_timeout: common.connect_timeout,
        script_dir,
        live: true,
        placement: common.pin,
    };
    let mut out = std::io::stdout();
    match sim::run(&config, &mut out, common.json) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenback-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Common {
    /// The defaults, for `tokenback-sim` with no subcommand.
    fn parse_defaults() -> Common {
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            common: Common,
        }
        Only::parse_from(["tokenback-sim"]).common
    }
}
