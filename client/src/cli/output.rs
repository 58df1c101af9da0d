//! How loopctl prints: aligned tables for people, one JSON object per line for scripts.
//!
//! # Invariants
//! - Every write goes through an `io::Write` and returns its error, so a closed pipe
//!   reaches `main` (which exits 0 quietly) instead of panicking as `println!` would.
//! - `--json` output is exactly one JSON object per line, whatever the command.
//! - Bytes (payloads, results) print as text when they are UTF-8; otherwise as hex
//!   (`payload_hex` in JSON, `0x...` for people).

use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value, json};

/// Where a command writes, and in which format.
pub struct Out<'w> {
    /// True for `--json`.
    pub json: bool,
    w: &'w mut dyn Write,
}

impl<'w> Out<'w> {
    pub fn new(json: bool, w: &'w mut dyn Write) -> Self {
        Out { json, w }
    }

    /// Writes one JSON object on its own line.
    pub fn json_line(&mut self, value: &Value) -> io::Result<()> {
        serde_json::to_writer(&mut *self.w, value)?;
        self.w.write_all(b"\n")
    }

    /// Writes one line of text.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        writeln!(self.w, "{text}")
    }

    /// Writes `key  value` lines, the values aligned.
    pub fn pairs(&mut self, pairs: &[(&str, String)]) -> io::Result<()> {
        let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in pairs {
            writeln!(self.w, "{key:width$}  {value}")?;
        }
        Ok(())
    }

    /// Writes `rows` as a table (people), or one JSON object per row (`--json`).
    pub fn rows(
        &mut self,
        table: Table,
        objects: impl IntoIterator<Item = Value>,
    ) -> io::Result<()> {
        if self.json {
            objects.into_iter().try_for_each(|o| self.json_line(&o))
        } else {
            table.write(self.w)
        }
    }

    /// Writes bytes as they are (`conn read`, `conn cat`).
    pub fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)
    }

    /// Flushes, so that followed events appear as they come.
    pub fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A table whose columns are as wide as their widest cell, two spaces apart.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Table {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        widths
    }

    pub fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        let widths = self.widths();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let cells = row.iter().zip(&widths);
            let line: Vec<String> = cells
                .map(|(cell, width)| format!("{cell:width$}"))
                .collect();
            writeln!(w, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}

/// A wall clock time as RFC 3339 UTC with milliseconds; `-` if unknown.
pub fn time(t: Option<SystemTime>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| humantime::format_rfc3339_millis(t).to_string(),
    )
}

/// A wall clock time for JSON: RFC 3339 with nanoseconds, or null.
pub fn time_json(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| {
        json!(humantime::format_rfc3339_nanos(t).to_string())
    })
}

/// A short human duration: `850us`, `12.5ms`, `3.2s`, `1h 2m 3s`.
pub fn duration(d: Duration) -> String {
    let micros = d.as_micros();
    if micros < 1_000 {
        format!("{micros}us")
    } else if micros < 1_000_000 {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else if d < Duration::from_secs(60) {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
    }
}

/// A loop time in seconds, with microseconds; `inf` for a timer that never fires.
pub fn loop_time(t: f64) -> String {
    format!("{t:.6}")
}

/// An optional value for people: `-` if unset.
pub fn or_dash(value: Option<&impl ToString>) -> String {
    value.map_or_else(|| "-".into(), ToString::to_string)
}

/// An optional loop time; `-` if unset.
pub fn opt_loop_time(t: Option<f64>) -> String {
    t.map_or_else(|| "-".into(), loop_time)
}

/// Bytes for people: the text if it is UTF-8 (escaped as Rust would), else `0x` + hex.
pub fn bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(text) => text.escape_debug().to_string(),
        Err(_) => format!("0x{}", hex(b)),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Inserts bytes into a JSON object as `name` (UTF-8 text) or `name_hex`.
pub fn insert_bytes(object: &mut Map<String, Value>, name: &str, b: &[u8]) {
    match std::str::from_utf8(b) {
        Ok(text) => object.insert(name.to_owned(), json!(text)),
        Err(_) => object.insert(format!("{name}_hex"), json!(hex(b))),
    };
}

/// A JSON object from a `json!({...})` literal (which is always an object).
pub fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// A duration in seconds for JSON.
pub fn secs(d: Duration) -> Value {
    json!(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(table: &Table) -> String {
        let mut buf = Vec::new();
        table.write(&mut buf).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn tables_align_columns_and_trim_line_ends() {
        let mut table = Table::new(&["ID", "STATE", "TAG"]);
        table.row(vec!["7".into(), "pending".into(), "".into()]);
        table.row(vec!["1234".into(), "fired".into(), "héllo".into()]);
        let want = "ID    STATE    TAG\n7     pending\n1234  fired    héllo\n";
        assert_eq!(render(&table), want);
    }

    #[test]
    fn empty_table_is_its_header() {
        assert_eq!(render(&Table::new(&["NAME", "STATE"])), "NAME  STATE\n");
    }

    #[test]
    fn json_rows_are_one_object_per_line() {
        let mut buf = Vec::new();
        let mut out = Out::new(true, &mut buf);
        let rows = [json!({"a": 1}), json!({"b": "x\ny"})];
        out.rows(Table::new(&["IGNORED"]), rows).unwrap();
        let text = String::from_utf8(buf).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, [json!({"a": 1}), json!({"b": "x\ny"})]);
    }

    #[test]
    fn durations_for_people() {
        let cases = [
            (Duration::from_micros(850), "850us"),
            (Duration::from_micros(12_500), "12.5ms"),
            (Duration::from_millis(3_200), "3.2s"),
            (Duration::from_secs(3_723), "1h 2m 3s"),
            (Duration::ZERO, "0us"),
        ];
        for (d, want) in cases {
            assert_eq!(duration(d), want);
        }
    }

    #[test]
    fn bytes_are_text_or_hex() {
        assert_eq!(bytes(b"hello"), "hello");
        assert_eq!(bytes(b"a\nb"), "a\\nb");
        assert_eq!(bytes(b"\xff\x00"), "0xff00");
        let mut object = Map::new();
        insert_bytes(&mut object, "payload", b"\xff");
        insert_bytes(&mut object, "result", b"ok");
        assert_eq!(
            Value::Object(object),
            json!({"payload_hex": "ff", "result": "ok"})
        );
    }

    #[test]
    fn times() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_795_385_400, 250_000_000);
        assert_eq!(time(Some(t)), "2026-11-22T22:10:00.250Z");
        assert_eq!(time(None), "-");
        assert_eq!(time_json(Some(t)), json!("2026-11-22T22:10:00.250000000Z"));
        assert_eq!(loop_time(1.5), "1.500000");
        assert_eq!(opt_loop_time(None), "-");
    }
}
