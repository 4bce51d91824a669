//! PID file text: what `parse_pid` accepts (a plain decimal in 2..=pid_max,
//! whitespace around it) and that everything else is refused with a one-line
//! reason.

use monitor_workers::process::pidfile::parse_pid;
use proptest::prelude::*;

/// The largest pid_max Linux allows (PID_MAX_LIMIT on 64-bit).
const LINUX_PID_MAX_LIMIT: u64 = 4_194_304;

/// Text that looks like a PID file, more or less.
fn pid_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ \t\n]{0,3}[+-]?[0-9]{0,25}[ \t\n]{0,3}",
        "[0-9a-fx+. -]{0,12}",
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| format!("{n}\n")),
        (0u64..=LINUX_PID_MAX_LIMIT + 10).prop_map(|n| format!("{n}\n")),
        "0{1,5}[0-9]{1,3}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never panics; Ok only for plain decimal digits (around whitespace) whose
    /// value is in 2..=pid_max, and then it is that value.
    #[test]
    fn pid_text_is_ok_only_for_a_plain_decimal_in_range(
        text in pid_text(),
        pid_max in 2u64..=LINUX_PID_MAX_LIMIT,
    ) {
        match parse_pid(&text, pid_max) {
            Ok(pid) => {
                let digits = text.trim();
                prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                    "accepted {text:?}");
                let value: u64 = digits.parse().unwrap();
                prop_assert!((2..=pid_max).contains(&value), "accepted {text:?} with pid_max {pid_max}");
                prop_assert_eq!(u64::try_from(pid).unwrap(), value);
            }
            Err(reason) => {
                prop_assert!(!reason.is_empty());
                prop_assert!(!reason.contains('\n'), "reason spans lines: {reason:?}");
            }
        }
    }

    /// A valid PID written the usual ways reads back as itself.
    #[test]
    fn valid_pids_round_trip(
        pid_max in 2u64..=LINUX_PID_MAX_LIMIT,
        pick in any::<u64>(),
        form in 0usize..4,
    ) {
        let pid = 2 + pick % (pid_max - 1);
        let text = match form {
            0 => pid.to_string(),
            1 => format!("{pid}\n"),
            2 => format!("  {pid} \n"),
            _ => format!("\t{pid}\r\n"),
        };
        prop_assert_eq!(parse_pid(&text, pid_max), Ok(pid as i32));
    }

    /// Out of range, or any non-digit inside: never Ok.
    #[test]
    fn out_of_range_and_non_digits_are_refused(
        pid_max in 2u64..=LINUX_PID_MAX_LIMIT,
        above in 1u64..1_000_000_000_000,
        junk in "[^0-9 \t\n\r\u{b}\u{c}]".prop_filter("not whitespace", |c| !c.chars().all(char::is_whitespace)),
        at in 0usize..8,
        pid in 2u64..=LINUX_PID_MAX_LIMIT,
    ) {
        prop_assert!(parse_pid(&(pid_max + above).to_string(), pid_max).is_err());
        prop_assert!(parse_pid("0", pid_max).is_err());
        prop_assert!(parse_pid("1", pid_max).is_err());
        let negative = format!("-{pid}");
        prop_assert!(parse_pid(&negative, pid_max).is_err());
        let mut text = pid.to_string();
        let at = at.min(text.len());
        text.insert_str(at, &junk);
        prop_assert!(parse_pid(&text, pid_max).is_err(), "accepted {text:?}");
    }
}

// ----- defects the properties found ----------------------------------------------
// The generators above stay clear of these inputs; each is pinned here.

/// Unicode whitespace (no-break space, ideographic space, NEL) around the
/// digits is trimmed like ASCII whitespace, as Python's `int(text.strip())`
/// does; inside the digits it is refused.
#[test]
fn unicode_whitespace_around_a_pid_is_trimmed_and_inside_refused() {
    for space in ["\u{a0}", "\u{3000}", "\u{85}", "\u{2009}"] {
        assert_eq!(parse_pid(&format!("{space}42"), 100), Ok(42), "{space:?}");
        assert_eq!(parse_pid(&format!("42{space}"), 100), Ok(42), "{space:?}");
        assert!(parse_pid(&format!("4{space}2"), 100).is_err(), "{space:?}");
    }
}
