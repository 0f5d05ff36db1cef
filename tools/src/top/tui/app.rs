//! The screen's state and what each key does; no drawing, no terminal, so tests drive it
//! with key events and a daemon of their own.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::top::model::Filter;
use crate::top::rates::{Key, Sampler};
use crate::top::socket::Daemon;
use crate::top::table::{self, Column, Kind, Row};

/// Points kept for each row's trend.
pub const HISTORY: usize = 16;

/// The shortest refresh interval accepted (the daemon's rates are over about a second, so
/// shorter ones mostly show noise).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Table,
    Help,
    /// Typing a filter or an interval; Enter applies, Esc cancels.
    Input {
        what: Input,
        text: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Filter,
    Interval,
}

/// What the loop does after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Redraw,
    Refresh,
    Quit,
}

/// Whether the last refresh reached the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Up,
    Down(String),
}

/// A row's recent points: fractions of its tightest limit, or its IOPS when unlimited.
#[derive(Debug, Default)]
pub struct Trend {
    pub limited: bool,
    pub points: VecDeque<f64>,
}

pub struct App {
    pub daemon: Daemon,
    sampler: Sampler,
    connections_seen: u64,
    /// The last frame's rows, before filtering.
    all: Vec<Row>,
    /// What is shown: filtered and sorted.
    pub rows: Vec<Row>,
    pub history: HashMap<Key, Trend>,
    pub sort: Column,
    pub descending: bool,
    pub filter: String,
    pub interval: Duration,
    pub mode: Mode,
    pub link: Link,
    /// The answer to the last command (a reset, a bad interval).
    pub message: Option<String>,
}

impl App {
    pub fn new(
        daemon: Daemon,
        interval: Duration,
        sort: Column,
        descending: bool,
        filter: String,
    ) -> App {
        App {
            daemon,
            sampler: Sampler::default(),
            connections_seen: 0,
            all: vec![],
            rows: vec![],
            history: HashMap::new(),
            sort,
            descending,
            filter,
            interval,
            mode: Mode::Table,
            link: Link::Down("connecting".into()),
            message: None,
        }
    }

    /// Reads the daemon's figures; a daemon that is gone shows as such, and is tried again
    /// at the next refresh.
    pub fn refresh(&mut self) {
        match self.daemon.stats(&Filter::default()) {
            Ok(stats) => {
                // Another daemon (restarted): its clock and counters start anew.
                if self.daemon.connections() != self.connections_seen {
                    self.connections_seen = self.daemon.connections();
                    self.sampler.forget();
                    self.history.clear();
                }
                let frame = self.sampler.observe(stats);
                self.all = table::rows(&frame);
                self.record_history();
                self.link = Link::Up;
            }
            Err(error) => {
                self.all.clear();
                self.link = Link::Down(error.to_string());
            }
        }
        self.arrange();
    }

    fn record_history(&mut self) {
        let mut seen = HashMap::new();
        for row in &self.all {
            let mut trend = self.history.remove(&key(row)).unwrap_or_default();
            let (limited, point) = match &row.usage {
                Some(usage) => (true, usage.fraction()),
                None => (false, row.rates.read_iops + row.rates.write_iops),
            };
            // A limit set or removed: the old points are in another unit.
            if trend.limited != limited {
                trend = Trend {
                    limited,
                    points: VecDeque::new(),
                };
            }
            if trend.points.len() == HISTORY {
                trend.points.pop_front();
            }
            trend.points.push_back(point);
            seen.insert(key(row), trend);
        }
        // Rows gone from the daemon lose their trend.
        self.history = seen;
    }

    /// Filters and sorts the last frame's rows again.
    fn arrange(&mut self) {
        self.rows = table::filter(self.all.clone(), &self.filter);
        table::sort(&mut self.rows, self.sort, self.descending);
    }

    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match self.mode.clone() {
            Mode::Help => {
                self.mode = Mode::Table;
                Action::Redraw
            }
            Mode::Input { what, text } => self.input_key(what, text, key.code),
            Mode::Table => self.table_key(key.code),
        }
    }

    fn table_key(&mut self, code: KeyCode) -> Action {
        let columns = Column::ALL.len();
        let at = Column::ALL
            .iter()
            .position(|&c| c == self.sort)
            .unwrap_or(0);
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Char('h') | KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Char('>') | KeyCode::Right => self.sort = Column::ALL[(at + 1) % columns],
            KeyCode::Char('<') | KeyCode::Left => {
                self.sort = Column::ALL[(at + columns - 1) % columns];
            }
            KeyCode::Char('r') => self.descending = !self.descending,
            KeyCode::Char('f') | KeyCode::Char('/') => {
                self.mode = Mode::Input {
                    what: Input::Filter,
                    text: self.filter.clone(),
                };
            }
            KeyCode::Char('d') => {
                self.mode = Mode::Input {
                    what: Input::Interval,
                    text: String::new(),
                };
            }
            KeyCode::Char('z') => {
                self.reset();
                return Action::Refresh;
            }
            KeyCode::Char(' ') => return Action::Refresh,
            _ => return Action::Redraw,
        }
        self.arrange();
        Action::Redraw
    }

    fn input_key(&mut self, what: Input, mut text: String, code: KeyCode) -> Action {
        match code {
            KeyCode::Esc => self.mode = Mode::Table,
            KeyCode::Enter => {
                self.mode = Mode::Table;
                match what {
                    Input::Filter => {
                        self.filter = text.trim().to_owned();
                        self.arrange();
                    }
                    Input::Interval => match parse_interval(&text) {
                        Ok(interval) => {
                            self.interval = interval;
                            self.message =
                                Some(format!("refreshing every {:.1}s", interval.as_secs_f64()));
                            return Action::Refresh;
                        }
                        Err(error) => self.message = Some(error),
                    },
                }
            }
            KeyCode::Backspace => {
                text.pop();
                self.mode = Mode::Input { what, text };
            }
            KeyCode::Char(c) if text.len() < 64 => {
                text.push(c);
                self.mode = Mode::Input { what, text };
            }
            _ => {}
        }
        Action::Redraw
    }

    /// Zeroes the counters of what is shown: everything without a filter, else each VBD and
    /// group on the screen.
    fn reset(&mut self) {
        let filters: Vec<Filter> = if self.filter.is_empty() {
            vec![Filter::default()]
        } else {
            self.rows.iter().map(filter_of).collect()
        };
        let mut done = (0, 0);
        for filter in &filters {
            match self.daemon.reset(filter) {
                Ok(count) => done = (done.0 + count.vbds, done.1 + count.groups),
                Err(error) => {
                    self.message = Some(format!("reset failed: {error}"));
                    return;
                }
            }
        }
        self.sampler.forget();
        self.message = Some(format!(
            "counters reset: {} VBDs, {} groups",
            done.0, done.1
        ));
    }
}

/// The control protocol's filter naming exactly this row.
fn filter_of(row: &Row) -> Filter {
    match row.kind {
        Kind::Vbd => Filter {
            domid: row.domid,
            devid: row.devid,
            group: None,
        },
        Kind::Group => Filter {
            group: row.name.clone(),
            ..Filter::default()
        },
    }
}

pub fn key(row: &Row) -> Key {
    match (row.kind, row.domid, row.devid) {
        (Kind::Vbd, Some(domid), Some(devid)) => Key::Vbd { domid, devid },
        _ => Key::Group(row.name.clone().unwrap_or_default()),
    }
}

/// Seconds, as typed at the `d` prompt or given to `-d`: "2", "0.5".
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{}` is not a number of seconds", text.trim()))?;
    if !(seconds.is_finite() && seconds <= 3600.0) {
        return Err(format!("`{}`: at most 3600 seconds", text.trim()));
    }
    let interval = Duration::from_secs_f64(seconds.max(0.0));
    if interval < MIN_INTERVAL {
        return Err(format!(
            "`{}`: at least {} seconds",
            text.trim(),
            MIN_INTERVAL.as_secs_f64()
        ));
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn app() -> App {
        let daemon = Daemon::new(
            PathBuf::from("/nonexistent/tokenbackd.sock"),
            Duration::from_secs(1),
        );
        App::new(
            daemon,
            Duration::from_secs(1),
            Column::ReadIops,
            true,
            String::new(),
        )
    }

    fn press(app: &mut App, keys: &str) -> Action {
        let mut action = Action::Redraw;
        for c in keys.chars() {
            let code = match c {
                '\n' => KeyCode::Enter,
                '\x1b' => KeyCode::Esc,
                c => KeyCode::Char(c),
            };
            action = app.key(KeyEvent::new(code, KeyModifiers::NONE));
        }
        action
    }

    #[test]
    fn a_missing_daemon_is_shown_as_down() {
        let mut app = app();
        app.refresh();
        match &app.link {
            Link::Down(why) => assert!(why.contains("not running"), "{why}"),
            Link::Up => panic!("up without a daemon"),
        }
        assert!(app.rows.is_empty());
    }

    #[test]
    fn keys_move_the_sort_column_and_its_order() {
        let mut app = app();
        press(&mut app, ">");
        assert_eq!(app.sort, Column::WriteIops);
        press(&mut app, "<<");
        assert_eq!(app.sort, Column::Balance);
        press(&mut app, "r");
        assert!(!app.descending);
        app.sort = Column::Domid;
        press(&mut app, "<");
        assert_eq!(app.sort, Column::Usage, "wraps around");
    }

    #[test]
    fn the_filter_and_interval_prompts_apply_on_enter_and_cancel_on_escape() {
        let mut app = app();
        press(&mut app, "fweb\n");
        assert_eq!(app.filter, "web");
        press(&mut app, "fx\x1b");
        assert_eq!(app.filter, "web", "Esc keeps the old filter");
        assert_eq!(press(&mut app, "d2.5\n"), Action::Refresh);
        assert_eq!(app.interval, Duration::from_millis(2500));
        press(&mut app, "dsoon\n");
        assert_eq!(app.interval, Duration::from_millis(2500));
        assert_eq!(
            app.message.as_deref(),
            Some("`soon` is not a number of seconds")
        );
    }

    #[test]
    fn help_opens_and_any_key_closes_it_and_q_quits() {
        let mut app = app();
        press(&mut app, "h");
        assert_eq!(app.mode, Mode::Help);
        assert_eq!(press(&mut app, "q"), Action::Redraw, "q closes help first");
        assert_eq!(app.mode, Mode::Table);
        assert_eq!(press(&mut app, "q"), Action::Quit);
    }

    #[test]
    fn a_trend_starts_afresh_when_its_limit_comes_or_goes() {
        use crate::top::model::tests_support::VBD;
        use crate::top::model::{Stats, Vbd};
        let mut app = app();
        let mut vbd: Vbd = serde_json::from_str(VBD).unwrap();
        let observe = |app: &mut App, vbd: &Vbd| {
            let stats = Stats {
                now_ns: 1,
                vbds: vec![vbd.clone()],
                groups: vec![],
            };
            app.all = table::rows(&app.sampler.observe(stats));
            app.record_history();
            let trend = &app.history[&key(&app.all[0])];
            (
                trend.limited,
                trend.points.iter().copied().collect::<Vec<f64>>(),
            )
        };
        // 3 of 500 IOPS, twice.
        observe(&mut app, &vbd);
        assert_eq!(observe(&mut app, &vbd), (true, vec![0.006, 0.006]));
        vbd.qos.keys.clear();
        assert_eq!(
            observe(&mut app, &vbd),
            (false, vec![3.0]),
            "IOPS, not fractions"
        );
    }

    #[test]
    fn intervals_are_bounded() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0.01").unwrap_err().contains("at least"));
        assert!(parse_interval("-1").unwrap_err().contains("at least"));
        assert!(parse_interval("1e9").unwrap_err().contains("at most"));
        assert!(parse_interval("NaN").unwrap_err().contains("at most"));
    }
}
