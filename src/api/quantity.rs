//! Resource quantities (`500m`, `1.5Gi`, `2e3`) as integers, the way the scheduler and
//! controllers compare them. Values are held in thousandths (upstream's `MilliValue`), rounded
//! up as upstream rounds.

/// A quantity string that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
pub struct QuantityError;

/// The value of `s` in thousandths of a unit (`"250m"` → 250, `"1Ki"` → 1,024,000).
pub fn parse_milli(s: &str) -> Result<i128, QuantityError> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (neg, num) = match num.strip_prefix('-') {
        Some(n) => (true, n),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    if num.is_empty() || num.matches('.').count() > 1 || num.contains(['+', '-']) {
        return Err(QuantityError);
    }
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(QuantityError);
    }
    // mantissa as an integer and a power of ten
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().map_err(|_| QuantityError)?;
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut mult: i128 = 1;
    match suffix {
        "" => {}
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => mult = 1 << 10,
        "Mi" => mult = 1 << 20,
        "Gi" => mult = 1 << 30,
        "Ti" => mult = 1 << 40,
        "Pi" => mult = 1 << 50,
        "Ei" => mult = 1 << 60,
        e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().map_err(|_| QuantityError)?,
        _ => return Err(QuantityError),
    }
    exp10 += 3; // thousandths
    let mut v = mantissa.checked_mul(mult).ok_or(QuantityError)?;
    if exp10 >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp10 as u32).ok_or(QuantityError)?).ok_or(QuantityError)?;
    } else {
        let d = 10i128.checked_pow((-exp10) as u32).unwrap_or(i128::MAX);
        v = (v + d - 1) / d; // round up, as upstream's MilliValue does
    }
    Ok(if neg { -v } else { v })
}

/// The value of `s` in whole units, rounded up (`"1500m"` → 2).
pub fn parse_value(s: &str) -> Result<i128, QuantityError> {
    let m = parse_milli(s)?;
    Ok(if m >= 0 { (m + 999) / 1000 } else { m / 1000 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_rounding() {
        assert_eq!(parse_milli("250m"), Ok(250));
        assert_eq!(parse_milli("1"), Ok(1000));
        assert_eq!(parse_milli("1.5"), Ok(1500));
        assert_eq!(parse_milli("0.1"), Ok(100));
        assert_eq!(parse_milli("1Ki"), Ok(1_024_000));
        assert_eq!(parse_value("1Gi"), Ok(1 << 30));
        assert_eq!(parse_value("2e3"), Ok(2000));
        assert_eq!(parse_value("1M"), Ok(1_000_000));
        assert_eq!(parse_milli("1n"), Ok(1), "rounded up");
        assert_eq!(parse_value("1500m"), Ok(2));
        assert_eq!(parse_milli("-1"), Ok(-1000));
        assert_eq!(parse_milli("1x"), Err(QuantityError));
        assert_eq!(parse_milli(""), Err(QuantityError));
        assert_eq!(parse_milli("."), Err(QuantityError));
    }
}
