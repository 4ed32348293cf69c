//! `ferrovsadm top`: a live view of a running ferrovs. On a terminal a
//! ratatui screen (services and real servers with connections, rates,
//! weights and health; drops by reason; FTP gateway counters) refreshed
//! every interval, sortable from the keyboard; otherwise (stdout piped or
//! redirected) the same figures as plain text every interval.

use crate::cli::TOP_SORT_COLUMNS;
use crate::ctl::control;
use crate::ctl::ipvsadm::TopOpts;
use crate::ctl::overview::{self, Overview};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// Fetch the daemon's overview over the control socket.
pub fn fetch(socket: &Path) -> Result<Overview, String> {
    let req = serde_json::json!({"v": control::PROTOCOL_VERSION, "op": "overview"});
    let reply = control::request(socket, &req)?;
    if reply.get("ok").and_then(|v| v.as_bool()) != Some(true) {
        return Err(reply.get("error").and_then(|e| e.as_str()).unwrap_or("unknown error from daemon").to_string());
    }
    serde_json::from_value(reply.get("overview").cloned().unwrap_or_default())
        .map_err(|e| format!("bad overview from daemon: {e}"))
}

pub fn run(socket: &Path, opts: &TopOpts) -> Result<(), String> {
    if std::io::stdout().is_terminal() {
        tui(socket, opts)
    } else {
        plain(socket, opts, &mut std::io::stdout())
    }
}

/// Plain text: one block per interval, separated by a `---` line.
pub fn plain(socket: &Path, opts: &TopOpts, out: &mut dyn Write) -> Result<(), String> {
    let mut n = 0u64;
    loop {
        let ov = fetch(socket)?;
        n += 1;
        let block = format!("--- sample {n}\n{}", overview::text(&ov, &opts.sort_by, false));
        if out.write_all(block.as_bytes()).and_then(|_| out.flush()).is_err() {
            return Ok(()); // the reader went away (| head)
        }
        if opts.iterations.is_some_and(|i| n >= i) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(opts.interval_ms));
    }
}

/// Sort state driven by keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortState {
    pub col: usize,
    pub reverse: bool,
}

impl SortState {
    pub fn new(name: &str) -> SortState {
        SortState { col: TOP_SORT_COLUMNS.iter().position(|c| *c == name).unwrap_or(1), reverse: false }
    }
    pub fn name(&self) -> &'static str {
        TOP_SORT_COLUMNS[self.col]
    }
    /// Apply a key; returns false for a quit key.
    pub fn key(&mut self, k: char) -> bool {
        match k {
            'q' | '\u{1b}' => return false,
            '\t' | '>' => self.col = (self.col + 1) % TOP_SORT_COLUMNS.len(),
            '<' => self.col = (self.col + TOP_SORT_COLUMNS.len() - 1) % TOP_SORT_COLUMNS.len(),
            'r' => self.reverse = !self.reverse,
            c => {
                if let Some(i) = TOP_SORT_COLUMNS.iter().position(|n| n.starts_with(c)) {
                    self.col = i;
                }
            }
        }
        true
    }
}

struct TermGuard;

impl Drop for TermGuard {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
        let _ =
            crossterm::execute!(std::io::stdout(), crossterm::terminal::LeaveAlternateScreen, crossterm::cursor::Show);
    }
}

fn tui(socket: &Path, opts: &TopOpts) -> Result<(), String> {
    use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
    let mut ov = fetch(socket)?; // fail before touching the terminal
    crossterm::terminal::enable_raw_mode().map_err(|e| format!("terminal: {e}"))?;
    let _guard = TermGuard;
    crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen)
        .map_err(|e| format!("terminal: {e}"))?;
    let backend = ratatui::backend::CrosstermBackend::new(std::io::stdout());
    let mut term = ratatui::Terminal::new(backend).map_err(|e| format!("terminal: {e}"))?;
    let mut sort = SortState::new(&opts.sort_by);
    let mut err: Option<String> = None;
    let mut n = 0u64;
    let interval = Duration::from_millis(opts.interval_ms);
    loop {
        n += 1;
        term.draw(|f| draw(f, &ov, &sort, err.as_deref())).map_err(|e| format!("terminal: {e}"))?;
        if opts.iterations.is_some_and(|i| n >= i) {
            return Ok(());
        }
        let deadline = Instant::now() + interval;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            if !event::poll(left).map_err(|e| format!("terminal: {e}"))? {
                break;
            }
            let redraw = match event::read().map_err(|e| format!("terminal: {e}"))? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let c = match k.code {
                        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => 'q',
                        KeyCode::Char(c) => c.to_ascii_lowercase(),
                        KeyCode::Esc => 'q',
                        KeyCode::Tab | KeyCode::Right => '>',
                        KeyCode::BackTab | KeyCode::Left => '<',
                        _ => ' ',
                    };
                    if !sort.key(c) {
                        return Ok(());
                    }
                    true
                }
                Event::Resize(..) => true,
                _ => false,
            };
            if redraw {
                term.draw(|f| draw(f, &ov, &sort, err.as_deref())).map_err(|e| format!("terminal: {e}"))?;
            }
        }
        match fetch(socket) {
            Ok(o) => {
                ov = o;
                err = None;
            }
            Err(e) => err = Some(e),
        }
    }
}

fn draw(f: &mut ratatui::Frame, ov: &Overview, sort: &SortState, err: Option<&str>) {
    use ratatui::layout::{Constraint, Layout};
    use ratatui::style::{Color, Modifier, Style};
    use ratatui::text::{Line, Span};
    use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};

    let area = f.area();
    let drop_lines = ov.drops.iter().filter(|d| d.1 > 0).count() + ov.refused.len();
    let bottom_h = (ov.ftp.len().max(drop_lines) as u16 + 3).clamp(4, 12);
    let [head, main, bottom] =
        Layout::vertical([Constraint::Length(3), Constraint::Min(5), Constraint::Length(bottom_h)]).areas(area);

    let fill = if ov.flow_capacity > 0 { ov.flows_active as f64 * 100.0 / ov.flow_capacity as f64 } else { 0.0 };
    let mut l1 = vec![
        Span::styled("ferrovs ", Style::new().add_modifier(Modifier::BOLD)),
        Span::raw(format!(
            "{}  up {}  {} workers  flows {}/{} ({fill:.1}%)  rx {} tx {}  drops {}",
            ov.version,
            overview::uptime(ov.uptime_s),
            ov.workers,
            overview::human(ov.flows_active),
            overview::human(ov.flow_capacity),
            overview::human(ov.rx_packets),
            overview::human(ov.tx_packets),
            overview::human(ov.drops_total())
        )),
    ];
    if let Some(e) = err {
        l1.push(Span::styled(format!("  [{e}]"), Style::new().fg(Color::Red)));
    }
    let l2 = Line::from(format!(
        "sort: {}{}   keys: n c a p b w h = column, Tab/arrows = next, r = reverse, q = quit",
        sort.name(),
        if sort.reverse { " (reversed)" } else { "" }
    ))
    .style(Style::new().fg(Color::DarkGray));
    f.render_widget(Paragraph::new(vec![Line::from(l1), l2]), head);

    let header = Row::new(overview::COLUMNS.iter().map(|(t, key)| {
        let st = if *key == sort.name() {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED).fg(Color::Yellow)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        Cell::from(*t).style(st)
    }));
    let rows = overview::rows(ov, sort.name(), sort.reverse).into_iter().map(|r| {
        let cells = overview::cells(&r);
        let health = match r.health.as_str() {
            "up" => Color::Green,
            "down" => Color::Red,
            h if h.starts_with("0/") => Color::Red,
            h if h.ends_with(" up") => Color::Green,
            _ => Color::Reset,
        };
        let row = Row::new(cells.into_iter().enumerate().map(|(i, c)| {
            let c = Cell::from(c);
            if i == 3 {
                c.style(Style::new().fg(health))
            } else {
                c
            }
        }));
        if r.service {
            row.style(Style::new().add_modifier(Modifier::BOLD))
        } else {
            row
        }
    });
    let widths = [
        Constraint::Min(24),
        Constraint::Length(9),
        Constraint::Length(6),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Length(8),
    ];
    f.render_widget(
        Table::new(rows, widths).header(header).block(Block::new().borders(Borders::TOP).title(" services ")),
        main,
    );

    let [left, right] = Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);
    let drops: Vec<Row> = ov
        .drops
        .iter()
        .filter(|d| d.1 > 0)
        .map(|(k, v)| Row::new(vec![Cell::from(k.clone()), Cell::from(v.to_string())]))
        // Then the new connections each service refused (counted in the reasons above too).
        .chain(
            ov.refused
                .iter()
                .map(|(svc, r, n)| Row::new(vec![Cell::from(format!(" {svc}: {r}")), Cell::from(n.to_string())])),
        )
        .collect();
    let drops = if drops.is_empty() { vec![Row::new(vec![Cell::from("no drops")])] } else { drops };
    f.render_widget(
        Table::new(drops, [Constraint::Min(14), Constraint::Length(12)])
            .block(Block::new().borders(Borders::TOP).title(" drops by reason ")),
        left,
    );
    let ftp_cols: Vec<&str> = std::iter::once("service").chain(overview::FTP_SHORT.iter().map(|c| c.1)).collect();
    let ftp_rows: Vec<Row> = ov
        .ftp
        .iter()
        .map(|x| {
            Row::new(
                std::iter::once(x.service.clone())
                    .chain(overview::FTP_SHORT.iter().map(|(n, _)| overview::human(x.get(n))))
                    .map(Cell::from)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    f.render_widget(
        Table::new(ftp_rows, [Constraint::Min(8); 8])
            .header(Row::new(ftp_cols).style(Style::new().add_modifier(Modifier::BOLD)))
            .block(Block::new().borders(Borders::TOP).title(" FTP gateway ")),
        right,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_change_the_sort() {
        let mut s = SortState::new("conns");
        assert_eq!(s.name(), "conns");
        assert!(s.key('p'));
        assert_eq!(s.name(), "pps");
        assert!(s.key('>'));
        assert_eq!(s.name(), "bps");
        assert!(s.key('<') && s.key('<'));
        assert_eq!(s.name(), "active");
        assert!(s.key('r'));
        assert!(s.reverse);
        assert!(s.key('n'));
        assert_eq!(s.name(), "name");
        assert!(s.key('<'));
        assert_eq!(s.name(), "health", "wraps around");
        assert!(!s.key('q'));
        assert!(!s.key('\u{1b}'));
    }

    #[test]
    fn screen_renders_on_a_test_backend() {
        let ov = crate::ctl::overview::tests::sample();
        let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(120, 24)).unwrap();
        t.draw(|f| draw(f, &ov, &SortState::new("conns"), None)).unwrap();
        let buf = t.backend().buffer().clone();
        let text: String = (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n")
            .collect();
        for want in [
            "ferrovs",
            "10.0.2.2:21",
            "<web&> (TCP 10.0.1.100:21)",
            "no_service",
            " <web&>: source_denied",
            "FTP gateway",
            "sort: conns",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let web = text.find("<web&>").unwrap();
        let ftp = text.find("ftp (TCP").unwrap();
        assert!(web < ftp, "sorted by conns: web (50) before ftp (10)");
    }
}
