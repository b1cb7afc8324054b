//! Cron schedules as upstream's CronJob reads them: the standard parser of robfig/cron v3
//! (`cron.ParseStandard`), which both the API server's validation and the CronJob controller use.
//!
//! Accepted: five fields (minute, hour, day of month, month, day of week), each a comma-separated
//! list of `*`, `?`, `n`, `a-b`, `*/n`, `a-b/n` and `a/n` (which means `a-max/n`); month names
//! `jan`..`dec` and weekday names `sun`..`sat` in any case; day of week 0-6 (7 is refused);
//! the macros `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly` and
//! `@every <Go duration>`; and a leading `TZ=<zone> ` or `CRON_TZ=<zone> ` (upstream's validation
//! refuses that prefix on new objects, but the parser takes it).
//!
//! Errors carry robfig's own messages, since upstream shows them verbatim in
//! `spec.schedule: Invalid value: ...`.
//!
//! Day matching is robfig's: when the day-of-month or the day-of-week field holds a `*` or `?`
//! (a stepped `*/n` with n > 1 does not count), both must match; otherwise either may.
//!
//! Next-time search is a transcription of robfig's `SpecSchedule.Next`, run in the schedule's
//! zone (its `TZ=` prefix) or else in the zone of the time given, with Go's rules for local
//! times that do not exist or exist twice. What that means around DST changes:
//! - a local time skipped when clocks go forward does not fire that day (a daily `30 2 * * *`
//!   in America/New_York skips the day clocks jump from 02:00 to 03:00);
//! - a local time repeated when clocks go back fires at both occurrences (`30 1 * * *` fires at
//!   01:30 EDT and again at 01:30 EST);
//! - hourly and finer schedules follow absolute time: every real hour fires once.
//!
//! Like robfig, the search gives up after five years of candidate dates (`None`).

use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike};
use chrono_tz::Tz;

/// Why a schedule or a time zone name was refused; `Display` gives upstream's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("empty spec string")]
    Empty,
    #[error("expected exactly 5 fields, found {}: [{}]", .0.len(), .0.join(" "))]
    FieldCount(Vec<String>),
    #[error("too many hyphens: {0}")]
    TooManyHyphens(String),
    #[error("too many slashes: {0}")]
    TooManySlashes(String),
    /// `expr` is the text that is not a number; `cause` is Go's `strconv.Atoi` error.
    #[error("failed to parse int from {expr}: {cause}")]
    NotANumber { expr: String, cause: String },
    #[error("negative number ({value}) not allowed: {expr}")]
    Negative { value: i64, expr: String },
    #[error("beginning of range ({start}) below minimum ({min}): {expr}")]
    BelowMinimum { start: u64, min: u64, expr: String },
    #[error("end of range ({end}) above maximum ({max}): {expr}")]
    AboveMaximum { end: u64, max: u64, expr: String },
    #[error("beginning of range ({start}) beyond end of range ({end}): {expr}")]
    StartAfterEnd { start: u64, end: u64, expr: String },
    #[error("step of range should be a positive number: {0}")]
    ZeroStep(String),
    #[error("unrecognized descriptor: {0}")]
    UnknownDescriptor(String),
    /// `cause` is Go's `time.ParseDuration` error.
    #[error("failed to parse duration {spec}: {cause}")]
    BadDuration { spec: String, cause: String },
    #[error("provided bad location {name}: {cause}")]
    BadLocation { name: String, cause: Box<CronError> },
    #[error("unknown time zone {0}")]
    UnknownTimeZone(String),
    #[error("time: invalid location name")]
    InvalidLocationName,
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    kind: Kind,
    /// The zone named by a `TZ=`/`CRON_TZ=` prefix; `None` means "the zone of the time given".
    location: Option<Tz>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// Bit sets as robfig keeps them; bit 63 marks a field that held `*` or `?`.
    Spec { second: u64, minute: u64, hour: u64, dom: u64, month: u64, dow: u64 },
    /// `@every`: whole seconds, at least one.
    Every { seconds: i64 },
}

const STAR: u64 = 1 << 63;

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [(&'static str, u64)],
}

const MINUTES: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOURS: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &[("sun", 0), ("mon", 1), ("tue", 2), ("wed", 3), ("thu", 4), ("fri", 5), ("sat", 6)],
};

impl Schedule {
    /// Parses a schedule exactly as `cron.ParseStandard` does, with its error messages.
    pub fn parse(spec: &str) -> Result<Schedule, CronError> {
        if spec.is_empty() {
            return Err(CronError::Empty);
        }
        let mut spec = spec;
        let mut location = None;
        if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
            let eq = spec.find('=').unwrap_or(0);
            // robfig slices up to the first space; without one Go would panic, here the rest
            // of the text is the zone and no fields are left.
            let (name, rest) = match spec.find(' ') {
                Some(i) => (&spec[eq + 1..i], &spec[i..]),
                None => (&spec[eq + 1..], ""),
            };
            location = match name {
                "Local" => None,
                _ => Some(
                    parse_time_zone(name)
                        .map_err(|e| CronError::BadLocation { name: name.to_string(), cause: Box::new(e) })?,
                ),
            };
            spec = rest.trim();
        }
        if spec.starts_with('@') {
            return parse_descriptor(spec).map(|kind| Schedule { kind, location });
        }
        let fields: Vec<&str> = spec.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(CronError::FieldCount(fields.iter().map(|f| f.to_string()).collect()));
        }
        Ok(Schedule {
            kind: Kind::Spec {
                second: 1,
                minute: field(fields[0], &MINUTES)?,
                hour: field(fields[1], &HOURS)?,
                dom: field(fields[2], &DOM)?,
                month: field(fields[3], &MONTHS)?,
                dow: field(fields[4], &DOW)?,
            },
            location,
        })
    }

    /// The zone of a `TZ=` or `CRON_TZ=` prefix, if the schedule had one.
    pub fn time_zone(&self) -> Option<Tz> {
        self.location
    }

    /// The first activation strictly after `t`, in `t`'s zone; computed in the schedule's own
    /// zone when it has one, else in `t`'s. `None` when nothing matches within five years.
    pub fn next_after(&self, t: DateTime<Tz>) -> Option<DateTime<Tz>> {
        let orig = t.timezone();
        match self.kind {
            Kind::Every { seconds } => {
                // Go: t.Add(delay - t.Nanosecond())
                let base = DateTime::from_timestamp(t.timestamp(), 0)?;
                Some(base.checked_add_signed(TimeDelta::try_seconds(seconds)?)?.with_timezone(&orig))
            }
            Kind::Spec { second, minute, hour, dom, month, dow } => {
                let loc = self.location.unwrap_or(orig);
                let mut t = DateTime::from_timestamp(t.timestamp().checked_add(1)?, 0)?.with_timezone(&loc);
                let mut added = false;
                let year_limit = t.year() + 5;
                let day_matches = |t: &DateTime<Tz>| {
                    let dom_match = dom & (1 << t.day()) != 0;
                    let dow_match = dow & (1 << t.weekday().num_days_from_sunday()) != 0;
                    if dom & STAR != 0 || dow & STAR != 0 { dom_match && dow_match } else { dom_match || dow_match }
                };
                'wrap: loop {
                    if t.year() > year_limit {
                        return None;
                    }
                    while month & (1 << t.month()) == 0 {
                        if !added {
                            added = true;
                            t = go_date(&loc, t.year(), t.month().into(), 1, 0, 0, 0)?;
                        }
                        t = add_date(&loc, &t, 1, 0)?;
                        if t.month() == 1 {
                            continue 'wrap;
                        }
                    }
                    while !day_matches(&t) {
                        if !added {
                            added = true;
                            t = go_date(&loc, t.year(), t.month().into(), t.day().into(), 0, 0, 0)?;
                        }
                        t = add_date(&loc, &t, 0, 1)?;
                        // Where midnight does not exist, robfig nudges back to it.
                        let h = i64::from(t.hour());
                        if h != 0 {
                            let shift = if h > 12 { 24 - h } else { -h };
                            t = t.checked_add_signed(TimeDelta::hours(shift))?;
                        }
                        if t.day() == 1 {
                            continue 'wrap;
                        }
                    }
                    while hour & (1 << t.hour()) == 0 {
                        if !added {
                            added = true;
                            t = go_date(&loc, t.year(), t.month().into(), t.day().into(), t.hour().into(), 0, 0)?;
                        }
                        t = t.checked_add_signed(TimeDelta::hours(1))?;
                        if t.hour() == 0 {
                            continue 'wrap;
                        }
                    }
                    while minute & (1 << t.minute()) == 0 {
                        if !added {
                            added = true;
                            t = truncate(&loc, &t, 60)?;
                        }
                        t = t.checked_add_signed(TimeDelta::minutes(1))?;
                        if t.minute() == 0 {
                            continue 'wrap;
                        }
                    }
                    while second & (1 << t.second()) == 0 {
                        if !added {
                            added = true;
                            t = truncate(&loc, &t, 1)?;
                        }
                        t = t.checked_add_signed(TimeDelta::seconds(1))?;
                        if t.second() == 0 {
                            continue 'wrap;
                        }
                    }
                    return Some(t.with_timezone(&orig));
                }
            }
        }
    }
}

impl std::str::FromStr for Schedule {
    type Err = CronError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

/// Resolves a zone name as Go's `time.LoadLocation` does on Linux: `""` and `"UTC"` are UTC,
/// names are IANA names, case-sensitive. `"Local"` (the machine's zone in Go) is refused here.
pub fn parse_time_zone(name: &str) -> Result<Tz, CronError> {
    if name.is_empty() || name == "UTC" {
        return Ok(Tz::UTC);
    }
    if name.contains("..") || name.starts_with('/') || name.starts_with('\\') {
        return Err(CronError::InvalidLocationName);
    }
    name.parse::<Tz>().map_err(|_| CronError::UnknownTimeZone(name.to_string()))
}

/// One field: a comma-separated list of ranges (empty items are skipped, as Go's
/// `strings.FieldsFunc` does).
fn field(text: &str, b: &Bounds) -> Result<u64, CronError> {
    let mut bits = 0;
    for expr in text.split(',').filter(|e| !e.is_empty()) {
        bits |= range(expr, b)?;
    }
    Ok(bits)
}

/// `number | number "-" number ["/" number]`, or `*`/`?` with an optional step.
fn range(expr: &str, b: &Bounds) -> Result<u64, CronError> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_and_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_and_high.len() == 1;
    let (start, mut end, mut extra) = if low_and_high[0] == "*" || low_and_high[0] == "?" {
        (b.min, b.max, STAR)
    } else {
        let start = int_or_name(low_and_high[0], b)?;
        let end = match low_and_high.len() {
            1 => start,
            2 => int_or_name(low_and_high[1], b)?,
            _ => return Err(CronError::TooManyHyphens(expr.to_string())),
        };
        (start, end, 0)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = parse_uint(range_and_step[1])?;
            // "N/step" means "N-max/step".
            if single {
                end = b.max;
            }
            if step > 1 {
                extra = 0;
            }
            step
        }
        _ => return Err(CronError::TooManySlashes(expr.to_string())),
    };
    let expr = expr.to_string();
    if start < b.min {
        return Err(CronError::BelowMinimum { start, min: b.min, expr });
    }
    if end > b.max {
        return Err(CronError::AboveMaximum { end, max: b.max, expr });
    }
    if start > end {
        return Err(CronError::StartAfterEnd { start, end, expr });
    }
    if step == 0 {
        return Err(CronError::ZeroStep(expr));
    }
    let mut bits = 0u64;
    let mut i = start;
    while i <= end {
        bits |= 1 << i;
        i = i.saturating_add(step);
    }
    Ok(bits | extra)
}

fn int_or_name(expr: &str, b: &Bounds) -> Result<u64, CronError> {
    let lower = expr.to_lowercase();
    match b.names.iter().find(|(n, _)| *n == lower) {
        Some((_, v)) => Ok(*v),
        None => parse_uint(expr),
    }
}

/// Go's `strconv.Atoi`, then a refusal of negatives, with robfig's messages.
fn parse_uint(expr: &str) -> Result<u64, CronError> {
    let atoi_err = |why: &str| CronError::NotANumber {
        expr: expr.to_string(),
        cause: format!("strconv.Atoi: parsing {expr:?}: {why}"),
    };
    let (neg, digits) = match expr.as_bytes().first() {
        Some(b'+') => (false, &expr[1..]),
        Some(b'-') => (true, &expr[1..]),
        _ => (false, expr),
    };
    if digits.is_empty() {
        return Err(atoi_err("invalid syntax"));
    }
    let mut n: u64 = 0;
    for c in digits.bytes() {
        if !c.is_ascii_digit() {
            return Err(atoi_err("invalid syntax"));
        }
        n = match n.checked_mul(10).and_then(|n| n.checked_add(u64::from(c - b'0'))) {
            Some(n) => n,
            None => return Err(atoi_err("value out of range")),
        };
    }
    let limit = 1u64 << 63;
    if (!neg && n >= limit) || (neg && n > limit) {
        return Err(atoi_err("value out of range"));
    }
    if neg && n != 0 {
        return Err(CronError::Negative { value: (n as i128).wrapping_neg() as i64, expr: expr.to_string() });
    }
    Ok(n)
}

fn parse_descriptor(spec: &str) -> Result<Kind, CronError> {
    let all = |b: &Bounds| -> u64 { bits(b.min, b.max) | STAR };
    let (minute, hour, dom, month, dow) = match spec {
        "@yearly" | "@annually" => (1, 1, 1 << DOM.min, 1 << MONTHS.min, all(&DOW)),
        "@monthly" => (1, 1, 1 << DOM.min, all(&MONTHS), all(&DOW)),
        "@weekly" => (1, 1, all(&DOM), all(&MONTHS), 1 << DOW.min),
        "@daily" | "@midnight" => (1, 1, all(&DOM), all(&MONTHS), all(&DOW)),
        "@hourly" => (1, all(&HOURS), all(&DOM), all(&MONTHS), all(&DOW)),
        _ => {
            let Some(text) = spec.strip_prefix("@every ") else {
                return Err(CronError::UnknownDescriptor(spec.to_string()));
            };
            let nanos = go_duration(text).map_err(|cause| CronError::BadDuration { spec: spec.to_string(), cause })?;
            // robfig's Every: at least a second, fractions of a second dropped.
            let seconds = (nanos / 1_000_000_000).max(1);
            return Ok(Kind::Every { seconds });
        }
    };
    Ok(Kind::Spec { second: 1, minute, hour, dom, month, dow })
}

fn bits(min: u64, max: u64) -> u64 {
    (min..=max).fold(0, |acc, i| acc | 1 << i)
}

/// Go's `time.ParseDuration`, in nanoseconds, with its error messages.
pub(crate) fn go_duration(orig: &str) -> Result<i64, String> {
    const LIMIT: u64 = 1 << 63;
    let invalid = || format!("time: invalid duration {}", go_quote(orig));
    let mut s = orig.as_bytes();
    let mut neg = false;
    if let Some(&c) = s.first()
        && (c == b'-' || c == b'+')
    {
        neg = c == b'-';
        s = &s[1..];
    }
    if s == b"0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(invalid());
        }
        // Whole part.
        let before = s.len();
        let mut v: u64 = 0;
        let mut i = 0;
        while i < s.len() && s[i].is_ascii_digit() {
            if v > LIMIT / 10 {
                return Err(invalid());
            }
            v = v * 10 + u64::from(s[i] - b'0');
            if v > LIMIT {
                return Err(invalid());
            }
            i += 1;
        }
        s = &s[i..];
        let pre = before != s.len();
        // Fraction.
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let before = s.len();
            let mut overflow = false;
            let mut i = 0;
            while i < s.len() && s[i].is_ascii_digit() {
                if !overflow {
                    if f > (LIMIT - 1) / 10 {
                        overflow = true;
                    } else {
                        let y = f * 10 + u64::from(s[i] - b'0');
                        if y > LIMIT {
                            overflow = true;
                        } else {
                            f = y;
                            scale *= 10.0;
                        }
                    }
                }
                i += 1;
            }
            s = &s[i..];
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        // Unit.
        let i = s.iter().position(|c| *c == b'.' || c.is_ascii_digit()).unwrap_or(s.len());
        if i == 0 {
            return Err(format!("time: missing unit in duration {}", go_quote(orig)));
        }
        let (u, rest) = s.split_at(i);
        s = rest;
        let unit: u64 = match u {
            b"ns" => 1,
            // us, µs (U+00B5) and μs (U+03BC)
            b"us" | b"\xc2\xb5s" | b"\xce\xbcs" => 1_000,
            b"ms" => 1_000_000,
            b"s" => 1_000_000_000,
            b"m" => 60_000_000_000,
            b"h" => 3_600_000_000_000,
            _ => {
                return Err(format!(
                    "time: unknown unit {} in duration {}",
                    go_quote(&String::from_utf8_lossy(u)),
                    go_quote(orig)
                ));
            }
        };
        if v > LIMIT / unit {
            return Err(invalid());
        }
        v *= unit;
        if f > 0 {
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        d += v;
        if d > LIMIT {
            return Err(invalid());
        }
    }
    if neg {
        return Ok((d as i128).wrapping_neg() as i64);
    }
    if d > LIMIT - 1 {
        return Err(invalid());
    }
    Ok(d as i64)
}

/// The `time` package's quoting: `"`, `\` escaped, bytes outside printable ASCII as `\xNN`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        if (c as u32) < 0x20 || (c as u32) >= 0x80 {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\x{b:02x}"));
            }
        } else {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
    }
    out.push('"');
    out
}

/// Go's `time.Date(year, month, day, hour, min, sec, 0, loc)`: out-of-range parts carry over,
/// and a local time is resolved the way Go resolves it. In a gap (clocks going forward) that
/// gives the instant the same distance past the transition measured in the old offset
/// (02:30 in a 02:00→03:00 gap is 01:30 before it); a repeated time gives the first occurrence.
fn go_date(loc: &Tz, year: i32, month: i64, day: i64, hour: i64, min: i64, sec: i64) -> Option<DateTime<Tz>> {
    let m0 = month - 1;
    let year = i32::try_from(i64::from(year) + m0.div_euclid(12)).ok()?;
    let month = u32::try_from(m0.rem_euclid(12) + 1).ok()?;
    let naive = NaiveDate::from_ymd_opt(year, month, 1)?
        .and_hms_opt(0, 0, 0)?
        .checked_add_signed(TimeDelta::try_days(day - 1)?)?
        .checked_add_signed(TimeDelta::try_seconds(hour * 3600 + min * 60 + sec)?)?;
    resolve_local(loc, naive)
}

/// Go's zone lookup for a wall-clock time: the offset in force at that wall time read as UTC,
/// then, if that offset puts the instant in another period, the offset of that period.
fn resolve_local(loc: &Tz, naive: NaiveDateTime) -> Option<DateTime<Tz>> {
    let offset_at = |utc: &NaiveDateTime| i64::from(loc.offset_from_utc_datetime(utc).fix().local_minus_utc());
    let guess = naive.checked_sub_signed(TimeDelta::seconds(offset_at(&naive)))?;
    let utc = naive.checked_sub_signed(TimeDelta::seconds(offset_at(&guess)))?;
    Some(loc.from_utc_datetime(&utc))
}

/// Go's `t.AddDate(0, months, days)` on wall-clock fields.
fn add_date(loc: &Tz, t: &DateTime<Tz>, months: i64, days: i64) -> Option<DateTime<Tz>> {
    go_date(
        loc,
        t.year(),
        i64::from(t.month()) + months,
        i64::from(t.day()) + days,
        t.hour().into(),
        t.minute().into(),
        t.second().into(),
    )
}

/// Go's `t.Truncate(d)` for whole seconds: on absolute time, not wall time.
fn truncate(loc: &Tz, t: &DateTime<Tz>, seconds: i64) -> Option<DateTime<Tz>> {
    let ts = t.timestamp();
    Some(DateTime::from_timestamp(ts - ts.rem_euclid(seconds), 0)?.with_timezone(loc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tz: Tz, s: &str) -> DateTime<Tz> {
        let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap();
        tz.from_local_datetime(&naive).earliest().unwrap()
    }

    fn next(spec: &str, from: &str) -> String {
        let s = Schedule::parse(spec).unwrap();
        s.next_after(at(Tz::UTC, from)).map(|t| t.format("%Y-%m-%d %H:%M:%S %a").to_string()).unwrap_or_default()
    }

    /// The first `n` activations after `from`, in `tz`, with offsets.
    fn series(spec: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(spec).unwrap();
        let mut t = at(tz, from);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.format("%Y-%m-%d %H:%M:%S %Z").to_string()
            })
            .collect()
    }

    fn err(spec: &str) -> String {
        Schedule::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn stars_values_lists_and_ranges() {
        assert_eq!(next("* * * * *", "2024-01-01 10:00:30"), "2024-01-01 10:01:00 Mon");
        assert_eq!(next("? ? ? ? ?", "2024-01-01 10:00:00"), "2024-01-01 10:01:00 Mon");
        assert_eq!(next("5 4 * * *", "2024-01-01 10:00:00"), "2024-01-02 04:05:00 Tue");
        assert_eq!(next("0,30 * * * *", "2024-01-01 10:00:00"), "2024-01-01 10:30:00 Mon");
        assert_eq!(next("0 22-23 * * *", "2024-01-01 10:00:00"), "2024-01-01 22:00:00 Mon");
        assert_eq!(next("0 1,22-23 * * *", "2024-01-01 23:00:00"), "2024-01-02 01:00:00 Tue");
        // Empty list items are skipped, as Go's FieldsFunc does.
        assert_eq!(next("0,,30 * * * *", "2024-01-01 10:00:00"), "2024-01-01 10:30:00 Mon");
        // Strictly after: an exact match moves on.
        assert_eq!(next("0 12 * * *", "2024-01-01 12:00:00"), "2024-01-02 12:00:00 Tue");
    }

    #[test]
    fn steps() {
        assert_eq!(next("*/15 * * * *", "2024-01-01 10:01:00"), "2024-01-01 10:15:00 Mon");
        assert_eq!(next("10-20/5 * * * *", "2024-01-01 10:16:00"), "2024-01-01 10:20:00 Mon");
        assert_eq!(next("10-20/5 * * * *", "2024-01-01 10:21:00"), "2024-01-01 11:10:00 Mon");
        // a/n is a-max/n.
        assert_eq!(next("50/5 * * * *", "2024-01-01 10:56:00"), "2024-01-01 11:50:00 Mon");
        assert_eq!(next("0 0 1/10 * *", "2024-01-12 00:00:00"), "2024-01-21 00:00:00 Sun");
        // A step larger than the range keeps only its start.
        assert_eq!(next("*/61 * * * *", "2024-01-01 10:01:00"), "2024-01-01 11:00:00 Mon");
        // "*-5" reads as "*": robfig looks only at the part before the hyphen.
        assert_eq!(next("*-5 * * * *", "2024-01-01 10:01:00"), "2024-01-01 10:02:00 Mon");
    }

    #[test]
    fn names_are_case_insensitive() {
        assert_eq!(next("0 0 1 mar *", "2024-01-01 00:00:00"), "2024-03-01 00:00:00 Fri");
        assert_eq!(next("0 0 1 JAN-Feb *", "2024-01-01 00:00:00"), "2024-02-01 00:00:00 Thu");
        assert_eq!(next("0 9 * * MON-fri", "2024-01-06 00:00:00"), "2024-01-08 09:00:00 Mon");
        assert_eq!(next("0 9 * * sun", "2024-01-01 00:00:00"), "2024-01-07 09:00:00 Sun");
        assert_eq!(next("0 9 * * 0", "2024-01-01 00:00:00"), "2024-01-07 09:00:00 Sun");
        assert_eq!(
            err("0 9 * * 7"),
            "end of range (7) above maximum (6): 7",
            "day of week stops at 6, as robfig's bounds do"
        );
        assert_eq!(
            err("0 0 1 January *"),
            "failed to parse int from January: strconv.Atoi: parsing \"January\": invalid syntax"
        );
    }

    #[test]
    fn day_of_month_and_day_of_week() {
        // Both restricted: either matches. 2024-01-13 is a Saturday; Friday the 5th comes first.
        assert_eq!(next("0 0 13 * 5", "2024-01-01 00:00:00"), "2024-01-05 00:00:00 Fri");
        assert_eq!(next("0 0 13 * 5", "2024-01-06 00:00:00"), "2024-01-12 00:00:00 Fri");
        assert_eq!(next("0 0 13 * 5", "2024-01-12 00:00:00"), "2024-01-13 00:00:00 Sat");
        // One of them a star: both must match (Friday the 13th).
        assert_eq!(next("0 0 13 * *", "2024-01-14 00:00:00"), "2024-02-13 00:00:00 Tue");
        assert_eq!(next("0 0 * * 5", "2024-01-06 00:00:00"), "2024-01-12 00:00:00 Fri");
        assert_eq!(next("0 0 ? * 5", "2024-01-06 00:00:00"), "2024-01-12 00:00:00 Fri");
        // A stepped star is a restriction in robfig v3: */2 days OR Mondays.
        assert_eq!(next("0 0 */2 * 1", "2024-01-01 12:00:00"), "2024-01-03 00:00:00 Wed");
        assert_eq!(next("0 0 */2 * 1", "2024-01-07 12:00:00"), "2024-01-08 00:00:00 Mon");
        // 31st only in months that have one; Feb 29 in leap years only.
        assert_eq!(next("0 0 31 * *", "2024-04-01 00:00:00"), "2024-05-31 00:00:00 Fri");
        assert_eq!(next("0 0 29 2 *", "2024-03-01 00:00:00"), "2028-02-29 00:00:00 Tue");
        // Never: February 30th. robfig gives up after five years.
        assert!(Schedule::parse("0 0 30 2 *").unwrap().next_after(at(Tz::UTC, "2024-01-01 00:00:00")).is_none());
    }

    #[test]
    fn macros() {
        assert_eq!(next("@yearly", "2024-05-05 00:00:00"), "2025-01-01 00:00:00 Wed");
        assert_eq!(next("@annually", "2024-05-05 00:00:00"), "2025-01-01 00:00:00 Wed");
        assert_eq!(next("@monthly", "2024-05-05 00:00:00"), "2024-06-01 00:00:00 Sat");
        assert_eq!(next("@weekly", "2024-05-05 00:00:00"), "2024-05-12 00:00:00 Sun");
        assert_eq!(next("@daily", "2024-05-05 00:00:00"), "2024-05-06 00:00:00 Mon");
        assert_eq!(next("@midnight", "2024-05-05 13:00:00"), "2024-05-06 00:00:00 Mon");
        assert_eq!(next("@hourly", "2024-05-05 13:00:00"), "2024-05-05 14:00:00 Sun");
        assert_eq!(next("@every 1h30m", "2024-05-05 13:00:10"), "2024-05-05 14:30:10 Sun");
        assert_eq!(next("@every 1.5s", "2024-05-05 13:00:10"), "2024-05-05 13:00:11 Sun");
        assert_eq!(next("@every 10ms", "2024-05-05 13:00:10"), "2024-05-05 13:00:11 Sun");
        assert_eq!(err("@Hourly"), "unrecognized descriptor: @Hourly");
        assert_eq!(err("@hourly "), "unrecognized descriptor: @hourly ");
        assert_eq!(err("@every Xm"), "failed to parse duration @every Xm: time: invalid duration \"Xm\"");
        assert_eq!(err("@every 5"), "failed to parse duration @every 5: time: missing unit in duration \"5\"");
        assert_eq!(err("@every 5d"), "failed to parse duration @every 5d: time: unknown unit \"d\" in duration \"5d\"");
        assert_eq!(err("@every "), "failed to parse duration @every : time: invalid duration \"\"");
    }

    #[test]
    fn error_messages() {
        assert_eq!(err(""), "empty spec string");
        assert_eq!(err("* * *"), "expected exactly 5 fields, found 3: [* * *]");
        assert_eq!(err("0 0 * * * *"), "expected exactly 5 fields, found 6: [0 0 * * * *]");
        assert_eq!(err("x * * * *"), "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax");
        assert_eq!(err("0-70 * * * *"), "end of range (70) above maximum (59): 0-70");
        assert_eq!(err("61 * * * *"), "end of range (61) above maximum (59): 61");
        assert_eq!(err("0 24 * * *"), "end of range (24) above maximum (23): 24");
        assert_eq!(err("0 0 0 * *"), "beginning of range (0) below minimum (1): 0");
        assert_eq!(err("0 0 * 13 *"), "end of range (13) above maximum (12): 13");
        assert_eq!(err("30-10 * * * *"), "beginning of range (30) beyond end of range (10): 30-10");
        assert_eq!(err("70/5 * * * *"), "beginning of range (70) beyond end of range (59): 70/5");
        assert_eq!(err("1-2-3 * * * *"), "too many hyphens: 1-2-3");
        assert_eq!(err("*/2/3 * * * *"), "too many slashes: */2/3");
        assert_eq!(err("*/0 * * * *"), "step of range should be a positive number: */0");
        assert_eq!(err("*/-12 * * * *"), "negative number (-12) not allowed: -12");
        assert_eq!(
            err("99999999999999999999 * * * *"),
            "failed to parse int from 99999999999999999999: strconv.Atoi: parsing \"99999999999999999999\": value out of range"
        );
        assert_eq!(err("TZ=Mars/Base * * * * *"), "provided bad location Mars/Base: unknown time zone Mars/Base");
        assert_eq!(err("every minute"), "expected exactly 5 fields, found 2: [every minute]");
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_time_zone("Europe/Paris").unwrap(), Tz::Europe__Paris);
        assert_eq!(parse_time_zone("").unwrap(), Tz::UTC);
        assert_eq!(parse_time_zone("europe/paris").unwrap_err().to_string(), "unknown time zone europe/paris");
        assert_eq!(parse_time_zone("Mars/Base").unwrap_err().to_string(), "unknown time zone Mars/Base");
        assert_eq!(parse_time_zone("../etc/passwd").unwrap_err().to_string(), "time: invalid location name");
        // A schedule's own zone wins over the zone of the time given; the answer comes back in
        // the caller's zone.
        let s = Schedule::parse("CRON_TZ=Asia/Tokyo 0 9 * * *").unwrap();
        assert_eq!(s.time_zone(), Some(Tz::Asia__Tokyo));
        let n = s.next_after(at(Tz::UTC, "2024-01-01 00:30:00")).unwrap();
        assert_eq!(n.format("%Y-%m-%d %H:%M %Z").to_string(), "2024-01-02 00:00 UTC");
        let s = Schedule::parse("TZ=UTC  @daily").unwrap();
        assert_eq!(s.time_zone(), Some(Tz::UTC));
        assert_eq!(Schedule::parse("TZ=Local 0 9 * * *").unwrap().time_zone(), None);
        // Without a prefix the schedule runs in the caller's zone.
        assert_eq!(series("0 9 * * *", Tz::Asia__Kolkata, "2024-01-01 10:00:00", 1), ["2024-01-02 09:00:00 IST"]);
    }

    #[test]
    fn daylight_saving() {
        let ny = Tz::America__New_York;
        // 2024-03-10: 02:00 EST becomes 03:00 EDT. 02:30 does not exist that day: skipped.
        assert_eq!(
            series("30 2 * * *", ny, "2024-03-09 00:00:00", 2),
            ["2024-03-09 02:30:00 EST", "2024-03-11 02:30:00 EDT"]
        );
        // Hourly follows real hours: 01:00 EST is followed by 03:00 EDT.
        assert_eq!(
            series("0 * * * *", ny, "2024-03-10 00:30:00", 3),
            ["2024-03-10 01:00:00 EST", "2024-03-10 03:00:00 EDT", "2024-03-10 04:00:00 EDT"]
        );
        // 2024-11-03: 02:00 EDT becomes 01:00 EST. 01:30 happens twice, and fires twice.
        assert_eq!(
            series("30 1 * * *", ny, "2024-11-02 12:00:00", 3),
            ["2024-11-03 01:30:00 EDT", "2024-11-03 01:30:00 EST", "2024-11-04 01:30:00 EST"]
        );
        assert_eq!(
            series("0 * * * *", ny, "2024-11-03 00:30:00", 3),
            ["2024-11-03 01:00:00 EDT", "2024-11-03 01:00:00 EST", "2024-11-03 02:00:00 EST"]
        );
        // Days keep their wall time across the change.
        assert_eq!(
            series("0 9 * * *", ny, "2024-03-09 12:00:00", 2),
            ["2024-03-10 09:00:00 EDT", "2024-03-11 09:00:00 EDT"]
        );
        // Go's reading of a wall time inside the gap: 02:30 is 01:30 EST.
        let naive = NaiveDateTime::parse_from_str("2024-03-10 02:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let t = resolve_local(&ny, naive).unwrap();
        assert_eq!(t.format("%H:%M %Z").to_string(), "01:30 EST");
        // And a repeated wall time is its first occurrence.
        let naive = NaiveDateTime::parse_from_str("2024-11-03 01:30:00", "%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(resolve_local(&ny, naive).unwrap().format("%H:%M %Z").to_string(), "01:30 EDT");
    }

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(go_duration("1.5h"), Ok(5_400_000_000_000));
        assert_eq!(go_duration(".5s"), Ok(500_000_000));
        assert_eq!(go_duration("300µs"), Ok(300_000));
        assert_eq!(go_duration("-2m"), Ok(-120_000_000_000));
        assert_eq!(go_duration("0"), Ok(0));
        assert_eq!(go_duration("1.s"), Ok(1_000_000_000));
        assert_eq!(go_duration("."), Err("time: invalid duration \".\"".to_string()));
        assert_eq!(go_duration("3000000h"), Err("time: invalid duration \"3000000h\"".to_string()));
        assert_eq!(go_duration("1é"), Err("time: unknown unit \"\\xc3\\xa9\" in duration \"1\\xc3\\xa9\"".to_string()));
        // Below a second, @every still ticks every second.
        assert_eq!(next("@every -5m", "2024-05-05 13:00:10"), "2024-05-05 13:00:11 Sun");
    }
}
