//! The report as text tables, for a terminal.

use std::io::{self, Write};

use super::forecast::{Forecast, Outcome};
use super::summary::{Stats, Summary, RECENT_SECS, TOP_ROUTES};

/// The headings of the count and latency columns every group table shares.
const STATS_HEADINGS: [&str; 10] = [
    "requests", "errors", "error%", "429s", "429%", "tokens", "p50 ms", "p90 ms", "p99 ms",
    "max ms",
];

/// Writes `summary` as text: a heading line, then a table each for the total, tenants,
/// keys, top routes and (when any) quota forecasts.
pub fn write_table<W: Write>(summary: &Summary, out: &mut W) -> io::Result<()> {
    match (&summary.first, &summary.last) {
        (Some(first), Some(last)) => writeln!(
            out,
            "{} records from {first} to {last}; malformed lines skipped: {}",
            summary.records, summary.malformed_lines
        )?,
        _ => writeln!(
            out,
            "no records; malformed lines skipped: {}",
            summary.malformed_lines
        )?,
    }
    if summary.records == 0 {
        return Ok(());
    }

    section(out, "total", &[""], [(vec!["all".into()], &summary.total)])?;
    let tenants = summary
        .tenants
        .iter()
        .map(|row| (vec![shown(&row.tenant)], &row.stats));
    section(out, "by tenant", &["tenant"], tenants)?;
    let keys = summary
        .keys
        .iter()
        .map(|row| (vec![shown(&row.key_id), shown(&row.tenant)], &row.stats));
    section(out, "by client key", &["key", "tenant"], keys)?;
    let routes = summary
        .top_routes
        .iter()
        .map(|row| (vec![shown(&row.route)], &row.stats));
    let title = format!("top {TOP_ROUTES} routes");
    section(out, &title, &["route"], routes)?;

    if !summary.forecasts.is_empty() {
        let as_of = summary.last.as_deref().unwrap_or("-");
        let title = format!(
            "quota forecast as of {as_of}, at the rate of the log's last {} minutes",
            RECENT_SECS / 60
        );
        forecasts(out, &title, &summary.forecasts)?;
    }
    Ok(())
}

/// One table of groups: their name columns, then [`STATS_HEADINGS`].
fn section<'s, W: Write>(
    out: &mut W,
    title: &str,
    names: &[&str],
    rows: impl IntoIterator<Item = (Vec<String>, &'s Stats)>,
) -> io::Result<()> {
    let headings: Vec<String> = names
        .iter()
        .chain(&STATS_HEADINGS)
        .map(|h| h.to_string())
        .collect();
    let mut cells = vec![headings];
    for (mut row, stats) in rows {
        row.extend(stats_cells(stats));
        cells.push(row);
    }
    writeln!(out, "\n{title}")?;
    grid(out, &cells, |c| c < names.len())
}

fn stats_cells(stats: &Stats) -> Vec<String> {
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    let latency = match stats.latency_us {
        Some(l) => [ms(l.p50), ms(l.p90), ms(l.p99), ms(l.max)],
        None => ["-".into(), "-".into(), "-".into(), "-".into()],
    };
    let mut cells = vec![
        stats.requests.to_string(),
        stats.errors.to_string(),
        format!("{:.2}", stats.error_rate * 100.0),
        stats.http_429.to_string(),
        format!("{:.2}", stats.http_429_rate * 100.0),
        stats.tokens.to_string(),
    ];
    cells.extend(latency);
    cells
}

fn forecasts<W: Write>(out: &mut W, title: &str, forecasts: &[Forecast]) -> io::Result<()> {
    let headings = [
        "key",
        "tenant",
        "window",
        "limit",
        "used",
        "left",
        "per hour",
        "resets at",
        "outlook",
    ];
    let mut cells = vec![headings.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
    for f in forecasts {
        let outlook = match (f.outcome, &f.runs_out_at) {
            (Outcome::Exhausted, Some(at)) => format!("used up at {at}"),
            (Outcome::Exhausted, None) => "used up".to_owned(),
            (Outcome::RunsOut, Some(at)) => format!("runs out at {at}"),
            (Outcome::RunsOut, None) | (Outcome::Lasts, _) => "lasts".to_owned(),
        };
        cells.push(vec![
            f.key_id.clone(),
            shown(&f.tenant),
            f.window.to_owned(),
            f.limit.to_string(),
            f.used.to_string(),
            f.remaining.to_string(),
            format!("{:.1}", f.recent_per_hour),
            f.resets_at.clone(),
            outlook,
        ]);
    }
    writeln!(out, "\n{title}")?;
    // Names, the window, and the two times read left to right.
    grid(out, &cells, |c| !(3..7).contains(&c))
}

/// Writes rows of cells in aligned columns two spaces apart: left-aligned where `left`
/// says so, right-aligned (numbers) elsewhere.
fn grid<W: Write>(
    out: &mut W,
    cells: &[Vec<String>],
    left: impl Fn(usize) -> bool,
) -> io::Result<()> {
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells
                .iter()
                .filter_map(|row| row.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in cells {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c > 0 {
                line.push_str("  ");
            }
            if left(c) {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            } else {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

/// A name, or `-` for none.
fn shown(name: &Option<String>) -> String {
    name.clone().unwrap_or_else(|| "-".to_owned())
}
