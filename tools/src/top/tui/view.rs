//! Drawing the screen from the app's state: a title line, the table (or why there is
//! none), and a line of keys or the last message.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Clear, Paragraph, Row as TableRow, Table, Wrap};
use ratatui::Frame;

use super::app::{key, App, Input, Link, Mode};
use crate::top::table::{Column, Kind, Row};

const BAR_WIDTH: usize = 10;
const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// What the help screen says; the keys are those of `App::key`.
pub const HELP: &str = "\
tokentop: tokenbackd's virtual disks (VBDs) and throttle groups

  < >  or  Left Right   sort by the previous / next column
  r                     reverse the order
  f  or  /              filter by domain: a domid or part of a name (Enter applies,
                        an empty filter shows everything, Esc cancels)
  d                     refresh interval in seconds
  z                     reset the counters of what is shown (all without a filter)
  space                 refresh now
  h  or  ?              this help (any key closes it)
  q  or  Esc            quit

Columns: RD_/WR_IOPS and RD_/WR_B/S are rates over the last refresh; DELAY% the
share of requests the limiter held back since the last reset; BALANCE the level
of the bucket nearest empty (negative in debt); QUEUE requests waiting for
admission, INFL in flight; ADM_P99 the admission delay's 99th percentile,
LAT_P99 the storage's; USE the rate against the tightest limit, TREND its recent
history (the IOPS against their own peak where nothing is limited).";

pub fn draw(frame: &mut Frame, app: &App) {
    let [title, body, status] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(title_line(app)), title);
    match &app.link {
        Link::Down(why) => {
            let text = format!(
                "{why}\n\nRetrying every {:.1}s. Start tokenbackd, or point tokentop at its socket with --socket PATH or --sim DIR.",
                app.interval.as_secs_f64()
            );
            let warning = Paragraph::new(text)
                .style(Style::default().fg(Color::Yellow))
                .wrap(Wrap { trim: false })
                .block(Block::default().borders(Borders::ALL).title(" no daemon "));
            frame.render_widget(warning, body);
        }
        Link::Up => frame.render_widget(table(app, body.width), body),
    }
    frame.render_widget(Paragraph::new(status_line(app)), status);
    if app.mode == Mode::Help {
        let area = centered(body, 84, 22);
        frame.render_widget(Clear, area);
        let help = Paragraph::new(HELP)
            .block(Block::default().borders(Borders::ALL).title(" help "))
            .wrap(Wrap { trim: false });
        frame.render_widget(help, area);
    }
}

fn title_line(app: &App) -> Line<'static> {
    let daemon = match (&app.link, app.daemon.version()) {
        (Link::Up, Some(version)) => version.daemon.clone(),
        _ => "no daemon".to_owned(),
    };
    let vbds = app.rows.iter().filter(|r| r.kind == Kind::Vbd).count();
    let groups = app.rows.len() - vbds;
    let order = if app.descending { "▼" } else { "▲" };
    let mut text = format!(
        "tokentop - {daemon} - {vbds} VBDs, {groups} groups - every {:.1}s - sort {} {order}",
        app.interval.as_secs_f64(),
        app.sort.header()
    );
    if !app.filter.is_empty() {
        text.push_str(&format!(" - filter: {}", app.filter));
    }
    Line::from(Span::styled(
        text,
        Style::default().add_modifier(Modifier::BOLD),
    ))
}

fn status_line(app: &App) -> Line<'static> {
    let text = match (&app.mode, &app.message) {
        (
            Mode::Input {
                what: Input::Filter,
                text,
            },
            _,
        ) => format!("filter (domid or name): {text}_"),
        (
            Mode::Input {
                what: Input::Interval,
                text,
            },
            _,
        ) => format!("refresh every (seconds): {text}_"),
        (_, Some(message)) => message.clone(),
        _ => "h help  q quit  </> sort  r reverse  f filter  d interval  z reset".into(),
    };
    Line::from(Span::styled(
        text,
        Style::default().add_modifier(Modifier::REVERSED),
    ))
}

/// Columns left out, in this order, while the table is wider than the terminal: the trend,
/// then what matters least at a glance, so the figures left keep their units (the sort
/// column always stays).
const GIVE_WAY: [Option<Column>; 7] = [
    None,
    Some(Column::State),
    Some(Column::Balance),
    Some(Column::LatencyP99),
    Some(Column::InFlight),
    Some(Column::Queued),
    Some(Column::AdmissionP99),
];

/// The columns (None: TREND) that fit in `width`, each with its width.
fn fitting(app: &App, cells: &[Vec<String>], width: u16) -> Vec<(usize, u16)> {
    let all: Vec<Option<Column>> = Column::ALL.iter().map(|&c| Some(c)).chain([None]).collect();
    let mut shown: Vec<(usize, u16)> = (0..all.len())
        .map(|i| {
            let widest = cells
                .iter()
                .map(|c| c[i].chars().count())
                .max()
                .unwrap_or(0);
            (i, widest.max(header(app, all[i]).chars().count()) as u16)
        })
        .collect();
    let needed = |shown: &[(usize, u16)]| shown.iter().map(|(_, w)| w + 1).sum::<u16>();
    for column in GIVE_WAY {
        if needed(&shown) <= width.saturating_add(1) {
            break;
        }
        if column != Some(app.sort) {
            shown.retain(|&(i, _)| all[i] != column);
        }
    }
    shown
}

fn header(app: &App, column: Option<Column>) -> String {
    let Some(column) = column else {
        return "TREND".into();
    };
    let mark = match (column == app.sort, app.descending) {
        (false, _) => "",
        (true, true) => "▼",
        (true, false) => "▲",
    };
    format!("{}{mark}", column.header())
}

/// The rows under a header, in as many columns as fit in `width`.
fn table(app: &App, width: u16) -> Table<'static> {
    let all: Vec<Option<Column>> = Column::ALL.iter().map(|&c| Some(c)).chain([None]).collect();
    let cells: Vec<Vec<String>> = app.rows.iter().map(|row| cells(app, row)).collect();
    let shown = fitting(app, &cells, width);
    let pick = |line: &[String]| -> Vec<Cell<'static>> {
        shown
            .iter()
            .map(|&(i, _)| Cell::from(line[i].clone()))
            .collect()
    };
    let widths: Vec<Constraint> = shown.iter().map(|&(_, w)| Constraint::Length(w)).collect();
    let rows = app.rows.iter().zip(&cells).map(|(row, cells)| {
        let style = match (row.kind, &row.qos_error) {
            (_, Some(_)) => Style::default().fg(Color::Red),
            (Kind::Group, None) => Style::default().fg(Color::Cyan),
            (Kind::Vbd, None) => Style::default(),
        };
        TableRow::new(pick(cells)).style(style)
    });
    let headers: Vec<String> = all.iter().map(|&c| header(app, c)).collect();
    let header =
        TableRow::new(pick(&headers)).style(Style::default().add_modifier(Modifier::REVERSED));
    Table::new(rows, widths).header(header).column_spacing(1)
}

fn cells(app: &App, row: &Row) -> Vec<String> {
    let mut cells: Vec<String> = Column::ALL
        .iter()
        .map(|&c| match c {
            Column::Usage => usage(row),
            Column::Name if row.kind == Kind::Group => {
                format!("[{}]", row.name.clone().unwrap_or_default())
            }
            Column::Vdev if row.kind == Kind::Group => format!("{} VBDs", row.members.len()),
            c => c.human(row),
        })
        .collect();
    cells.push(app.history.get(&key(row)).map_or(String::new(), |trend| {
        let points: Vec<f64> = trend.points.iter().copied().collect();
        sparkline(&points, trend.limited)
    }));
    cells
}

/// "██████░░░░ 62% iops-read": the rate against the tightest limit.
fn usage(row: &Row) -> String {
    match &row.usage {
        None => "-".into(),
        Some(u) => format!(
            "{} {:>3.0}% {}",
            bar(u.fraction()),
            u.fraction() * 100.0,
            u.limit
        ),
    }
}

pub fn bar(fraction: f64) -> String {
    let fraction = if fraction.is_finite() {
        fraction.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let full = (fraction * BAR_WIDTH as f64).round() as usize;
    format!("{}{}", "█".repeat(full), "░".repeat(BAR_WIDTH - full))
}

/// One character per point: fractions of the limit when `limited`, else against the
/// highest point.
pub fn sparkline(points: &[f64], limited: bool) -> String {
    let top = if limited {
        1.0
    } else {
        points.iter().copied().fold(0.0, f64::max)
    };
    points
        .iter()
        .map(|&p| {
            let level = if top > 0.0 && p.is_finite() {
                (p / top).clamp(0.0, 1.0)
            } else {
                0.0
            };
            SPARKS[(level * (SPARKS.len() - 1) as f64).round() as usize]
        })
        .collect()
}

fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_sparklines_stay_in_range() {
        assert_eq!(bar(0.62), "██████░░░░");
        assert_eq!(
            bar(7.0),
            "██████████",
            "over the limit (a burst) is a full bar"
        );
        assert_eq!(bar(f64::NAN), "░░░░░░░░░░");
        assert_eq!(sparkline(&[0.0, 0.5, 1.0, 2.0], true), "▁▅██");
        assert_eq!(sparkline(&[10.0, 20.0], false), "▅█");
        assert_eq!(sparkline(&[0.0, 0.0], false), "▁▁");
    }
}
