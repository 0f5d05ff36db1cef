//! The interactive screen: crossterm's terminal, ratatui's drawing, a refresh every
//! interval and at once after a command.

mod app;
mod view;

use std::io::{self, Stdout};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyEventKind};
use crossterm::execute;
use crossterm::terminal::{self, EnterAlternateScreen, LeaveAlternateScreen};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;

use app::Action;
pub use app::{parse_interval, App};

/// The terminal in raw mode on the alternate screen, given back as it was on drop, on
/// error and on panic alike.
struct Screen {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl Screen {
    fn enter() -> io::Result<Screen> {
        terminal::enable_raw_mode()?;
        execute!(io::stdout(), EnterAlternateScreen)?;
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave();
            hook(info);
        }));
        Ok(Screen {
            terminal: Terminal::new(CrosstermBackend::new(io::stdout()))?,
        })
    }
}

fn leave() {
    // Best effort: the terminal may already be gone.
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), LeaveAlternateScreen);
}

impl Drop for Screen {
    fn drop(&mut self) {
        leave();
        let _ = self.terminal.show_cursor();
    }
}

/// Runs the screen until the user quits.
pub fn run(mut app: App) -> io::Result<()> {
    let mut screen = Screen::enter()?;
    let mut next_refresh = Instant::now();
    loop {
        if Instant::now() >= next_refresh {
            app.refresh();
            next_refresh = Instant::now() + app.interval;
        }
        // draw() follows the terminal's size, so a resize needs only a redraw.
        screen.terminal.draw(|frame| view::draw(frame, &app))?;
        let wait = next_refresh.saturating_duration_since(Instant::now());
        if !event::poll(wait)? {
            continue;
        }
        let action = match event::read()? {
            // Only presses: some terminals report releases too.
            Event::Key(key) if key.kind == KeyEventKind::Press => {
                // A message stays until the next key.
                app.message = None;
                app.key(key)
            }
            _ => Action::Redraw,
        };
        match action {
            Action::Quit => return Ok(()),
            Action::Refresh => next_refresh = Instant::now(),
            Action::Redraw => {}
        }
        // The interval may have changed: never wait longer than the new one.
        next_refresh = next_refresh.min(Instant::now() + app.interval);
    }
}

/// How long a refresh may wait for the daemon before it counts as gone.
pub const DAEMON_TIMEOUT: Duration = Duration::from_secs(2);
