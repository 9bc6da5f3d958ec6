//! The progress bar of bulk actions, on stderr so stdout stays clean for `--json`.
//!
//! Drawn by hand (a dozen lines) rather than with a crate: on a terminal the line is
//! redrawn in place; anywhere else (a log, a pipe) a line is written only when the
//! numbers change, so a log shows each step once.

use std::io::{self, Write};

const WIDTH: usize = 30;

pub struct Progress {
    redraw_in_place: bool,
    last: Option<String>,
}

impl Progress {
    pub fn new(redraw_in_place: bool) -> Self {
        Self {
            redraw_in_place,
            last: None,
        }
    }

    /// Draws the bar of a bulk action (the API's `action` object).
    pub fn update(&mut self, err: &mut dyn Write, action: &serde_json::Value) -> io::Result<()> {
        let number = |name: &str| action[name].as_i64().unwrap_or(0);
        let (matched, done, skipped, errors) = (
            number("matched"),
            number("done"),
            number("skipped"),
            number("errors"),
        );
        let finished = done + skipped;
        let filled = if matched > 0 {
            (finished.min(matched) as usize * WIDTH) / matched as usize
        } else {
            WIDTH
        };
        let line = format!(
            "[{}{}] {finished}/{matched} {} ({done} done, {skipped} skipped, {errors} errors)",
            "#".repeat(filled),
            "-".repeat(WIDTH - filled),
            action["state"].as_str().unwrap_or("?"),
        );
        if self.last.as_deref() == Some(line.as_str()) {
            return Ok(());
        }
        if self.redraw_in_place {
            // Return to the line's start and clear it: the bar never scrolls.
            write!(err, "\r\x1b[2K{line}")?;
        } else {
            writeln!(err, "{line}")?;
        }
        err.flush()?;
        self.last = Some(line);
        Ok(())
    }

    /// Ends the bar's line on a terminal.
    pub fn finish(&mut self, err: &mut dyn Write) -> io::Result<()> {
        if self.redraw_in_place && self.last.is_some() {
            writeln!(err)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_log_gets_a_line_per_change_and_a_terminal_one_redrawn_line() {
        let mut log = Vec::new();
        let mut bar = Progress::new(false);
        let half = json!({"state": "running", "matched": 4, "done": 1, "skipped": 1, "errors": 0});
        bar.update(&mut log, &half).unwrap();
        bar.update(&mut log, &half).unwrap();
        bar.update(
            &mut log,
            &json!({"state": "done", "matched": 4, "done": 3, "skipped": 1, "errors": 0}),
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(log).unwrap(),
            format!(
                "[{}{}] 2/4 running (1 done, 1 skipped, 0 errors)\n[{}] 4/4 done (3 done, 1 skipped, 0 errors)\n",
                "#".repeat(15),
                "-".repeat(15),
                "#".repeat(30)
            )
        );

        let mut terminal = Vec::new();
        let mut bar = Progress::new(true);
        bar.update(&mut terminal, &half).unwrap();
        bar.finish(&mut terminal).unwrap();
        let text = String::from_utf8(terminal).unwrap();
        assert!(text.starts_with("\r\x1b[2K["), "{text:?}");
        assert!(text.ends_with("errors)\n"), "{text:?}");
    }

    #[test]
    fn nothing_matched_is_a_full_bar() {
        let mut log = Vec::new();
        Progress::new(false)
            .update(
                &mut log,
                &json!({"state": "done", "matched": 0, "done": 0, "skipped": 0, "errors": 0}),
            )
            .unwrap();
        assert!(
            String::from_utf8(log)
                .unwrap()
                .starts_with(&format!("[{}]", "#".repeat(30)))
        );
    }
}
