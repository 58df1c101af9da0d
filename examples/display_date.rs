//! Display the current date with `call_later`: asyncio's "Event Loop" page, "Display the
//! current date with call_later()".
//!
//! Prints the current UTC date and time every second for five seconds, then stops the loop.
//! `--seconds N` runs it for `N` seconds instead.
//!
//! ```text
//! cargo run --example display_date -- --seconds 2
//! ```

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use loopd::EventLoop;

const USAGE: &str = "usage: display_date [--seconds N]";

fn display_date(end_time: f64, lp: &EventLoop) {
    println!("{}", utc_now());
    if lp.time() + 1.0 < end_time {
        let next = lp.clone();
        let scheduled = lp.call_later(Duration::from_secs(1), move || {
            display_date(end_time, &next)
        });
        if let Err(err) = scheduled {
            eprintln!("display_date: {err}");
            lp.stop();
        }
    } else {
        lp.stop();
    }
}

/// The wall-clock time as Python prints an aware UTC datetime:
/// `2024-05-01 12:34:56.789012+00:00`.
fn utc_now() -> String {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}+00:00",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60,
        since_epoch.subsec_micros()
    )
}

/// (year, month, day) of a day counted from 1970-01-01, in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, from March 1st
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The run time in seconds: 5, or the value of `--seconds`.
fn parse_seconds(mut args: impl Iterator<Item = String>) -> Result<f64, String> {
    let mut seconds = 5.0;
    while let Some(arg) = args.next() {
        if arg != "--seconds" {
            return Err(format!("unexpected argument {arg:?}; {USAGE}"));
        }
        let value = args
            .next()
            .ok_or(format!("--seconds needs a value; {USAGE}"))?;
        seconds = value
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .ok_or(format!(
                "invalid --seconds {value:?}: must be a positive number"
            ))?;
    }
    Ok(seconds)
}

fn run(seconds: f64) -> loopd::Result<()> {
    let lp = EventLoop::new()?;
    // Schedule the first call to display_date().
    let end_time = lp.time() + seconds;
    let inner = lp.clone();
    lp.call_soon(move || display_date(end_time, &inner))?;
    // Blocking call interrupted by lp.stop().
    let ran = lp.run_forever();
    lp.close()?;
    ran
}

fn main() -> ExitCode {
    let seconds = match parse_seconds(std::env::args().skip(1)) {
        Ok(seconds) => seconds,
        Err(message) => {
            eprintln!("display_date: {message}");
            return ExitCode::from(2);
        }
    };
    match run(seconds) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("display_date: {err}");
            ExitCode::FAILURE
        }
    }
}
