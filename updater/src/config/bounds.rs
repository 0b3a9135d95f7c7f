//! The bounds of every number in the config (durations, sizes, counts).
//!
//! Each key has a documented range (README "Config", and
//! `packaging/slotctl.toml.example`); a value outside it is refused when
//! the config is loaded, by every command, in one line naming the key:
//! `config /etc/slotctl/slotctl.toml: agent.interval_secs = 9223372036854775807: must be 1 to 2592000 (30 days)`.
//! With these bounds no sum or doubling of config values can overflow, and
//! the code that meets `Instant`/`Duration` arithmetic uses checked or
//! saturating operations as a second line.

use super::Config;

/// One day, in seconds.
pub const DAY: u64 = 86_400;
/// One hour, in seconds.
pub const HOUR: u64 = 3_600;

/// A number's allowed range, inclusive, with how to say its maximum.
pub struct Bound {
    pub key: &'static str,
    pub min: u64,
    pub max: u64,
    pub max_text: &'static str,
}

/// The bounds of the config's top-level, `[http]` and `[agent]` numbers
/// (health checks' `timeout_secs` is [`CHECK_TIMEOUT`]).
pub const BOUNDS: &[Bound] = &[
    Bound {
        key: "tries",
        min: 1,
        max: 15,
        max_text: "the flags' 4-bit field",
    },
    Bound {
        key: "signature_threshold",
        min: 1,
        max: 256,
        max_text: "256 keys",
    },
    Bound {
        key: "http.connect_timeout_secs",
        min: 1,
        max: HOUR,
        max_text: "1 hour",
    },
    Bound {
        key: "http.stall_timeout_secs",
        min: 1,
        max: HOUR,
        max_text: "1 hour",
    },
    Bound {
        key: "http.retries",
        min: 0,
        max: 1_000,
        max_text: "1000 reconnects",
    },
    Bound {
        key: "http.backoff_initial_ms",
        min: 0,
        max: HOUR * 1000,
        max_text: "1 hour",
    },
    Bound {
        key: "http.backoff_max_ms",
        min: 0,
        max: HOUR * 1000,
        max_text: "1 hour",
    },
    Bound {
        key: "http.deadline_secs",
        min: 1,
        max: 7 * DAY,
        max_text: "7 days",
    },
    Bound {
        key: "http.min_bytes_per_sec",
        min: 0,
        max: 1 << 30,
        max_text: "1 GiB/s",
    },
    Bound {
        key: "http.min_speed_window_secs",
        min: 1,
        max: HOUR,
        max_text: "1 hour",
    },
    Bound {
        key: "agent.feed_signature_threshold",
        min: 1,
        max: 256,
        max_text: "256 keys",
    },
    Bound {
        key: "agent.max_feed_bytes",
        min: 1024,
        max: 64 << 20,
        max_text: "64 MiB",
    },
    Bound {
        key: "agent.interval_secs",
        min: 1,
        max: 30 * DAY,
        max_text: "30 days",
    },
    Bound {
        key: "agent.jitter_secs",
        min: 0,
        max: 30 * DAY,
        max_text: "30 days",
    },
    Bound {
        key: "agent.backoff_initial_secs",
        min: 1,
        max: 30 * DAY,
        max_text: "30 days",
    },
    Bound {
        key: "agent.backoff_max_secs",
        min: 1,
        max: 30 * DAY,
        max_text: "30 days",
    },
];

/// `boot_check.checks[N].timeout_secs`.
pub const CHECK_TIMEOUT: Bound = Bound {
    key: "timeout_secs",
    min: 1,
    max: DAY,
    max_text: "1 day",
};

/// The value of a key of [`BOUNDS`].
fn value(cfg: &Config, key: &str) -> u64 {
    let (h, a) = (&cfg.http, &cfg.agent);
    match key {
        "tries" => u64::from(cfg.tries),
        "signature_threshold" => cfg.signature_threshold as u64,
        "http.connect_timeout_secs" => h.connect_timeout_secs,
        "http.stall_timeout_secs" => h.stall_timeout_secs,
        "http.retries" => u64::from(h.retries),
        "http.backoff_initial_ms" => h.backoff_initial_ms,
        "http.backoff_max_ms" => h.backoff_max_ms,
        "http.deadline_secs" => h.deadline_secs,
        "http.min_bytes_per_sec" => h.min_bytes_per_sec,
        "http.min_speed_window_secs" => h.min_speed_window_secs,
        "agent.feed_signature_threshold" => a.feed_signature_threshold as u64,
        "agent.max_feed_bytes" => a.max_feed_bytes,
        "agent.interval_secs" => a.interval_secs,
        "agent.jitter_secs" => a.jitter_secs,
        "agent.backoff_initial_secs" => a.backoff_initial_secs,
        "agent.backoff_max_secs" => a.backoff_max_secs,
        _ => unreachable!("no config key {key}"),
    }
}

/// `KEY = VALUE: must be MIN to MAX (WHY)`, when out of range.
pub fn check_one(key: &str, v: u64, b: &Bound) -> Result<(), String> {
    if (b.min..=b.max).contains(&v) {
        return Ok(());
    }
    Err(format!(
        "{key} = {v}: must be {} to {} ({})",
        b.min, b.max, b.max_text
    ))
}

/// Every bound of the config; the first violation, naming its key.
pub fn check(cfg: &Config) -> Result<(), String> {
    for b in BOUNDS {
        check_one(b.key, value(cfg, b.key), b)?;
    }
    let a = &cfg.agent;
    if a.backoff_max_secs < a.backoff_initial_secs {
        return Err(format!(
            "agent.backoff_max_secs = {}: must not be below agent.backoff_initial_secs = {}",
            a.backoff_max_secs, a.backoff_initial_secs
        ));
    }
    for (i, c) in cfg.boot_check.checks.iter().enumerate() {
        let key = format!("boot_check.checks[{i}].timeout_secs");
        check_one(&key, c.timeout_secs, &CHECK_TIMEOUT)
            .map_err(|e| format!("{e}; health check {:?}", c.name))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set a key of [`BOUNDS`] (the types are narrower for some keys:
    /// only values that fit are set).
    fn set(c: &mut Config, key: &str, v: u64) {
        let (h, a) = (&mut c.http, &mut c.agent);
        match key {
            "tries" => c.tries = v as u8,
            "signature_threshold" => c.signature_threshold = v as usize,
            "http.connect_timeout_secs" => h.connect_timeout_secs = v,
            "http.stall_timeout_secs" => h.stall_timeout_secs = v,
            "http.retries" => h.retries = v as u32,
            "http.backoff_initial_ms" => h.backoff_initial_ms = v,
            "http.backoff_max_ms" => h.backoff_max_ms = v,
            "http.deadline_secs" => h.deadline_secs = v,
            "http.min_bytes_per_sec" => h.min_bytes_per_sec = v,
            "http.min_speed_window_secs" => h.min_speed_window_secs = v,
            "agent.feed_signature_threshold" => a.feed_signature_threshold = v as usize,
            "agent.max_feed_bytes" => a.max_feed_bytes = v,
            "agent.interval_secs" => a.interval_secs = v,
            "agent.jitter_secs" => a.jitter_secs = v,
            "agent.backoff_initial_secs" => {
                a.backoff_initial_secs = v;
                a.backoff_max_secs = v.max(1);
            }
            "agent.backoff_max_secs" => {
                a.backoff_max_secs = v;
                a.backoff_initial_secs = v.clamp(1, 30 * DAY);
            }
            _ => unreachable!("{key}"),
        }
        assert_eq!(value(c, key), v, "{key} cannot hold {v}");
    }

    #[test]
    fn every_key_is_checked_at_both_ends() {
        Config::default().validate_bounds().unwrap();
        for b in BOUNDS {
            let mut c = Config::default();
            set(&mut c, b.key, b.max);
            check(&c).unwrap_or_else(|e| panic!("{} at its max: {e}", b.key));
            set(&mut c, b.key, b.max + 1);
            let e = check(&c).unwrap_err();
            assert_eq!(
                e,
                format!(
                    "{} = {}: must be {} to {} ({})",
                    b.key,
                    b.max + 1,
                    b.min,
                    b.max,
                    b.max_text
                )
            );
            if b.min > 0 {
                set(&mut c, b.key, b.min - 1);
                let e = check(&c).unwrap_err();
                assert!(
                    e.starts_with(&format!("{} = {}: ", b.key, b.min - 1)),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn backoff_order_and_check_timeouts() {
        let mut c = Config::default();
        c.agent.backoff_initial_secs = 100;
        c.agent.backoff_max_secs = 99;
        assert!(check(&c).unwrap_err().contains("must not be below"));
        let mut c = Config::default();
        c.boot_check.checks.push(crate::config::HealthCheck {
            name: "net".into(),
            command: vec!["true".into()],
            timeout_secs: u64::MAX,
        });
        let e = check(&c).unwrap_err();
        assert!(
            e.starts_with(
                "boot_check.checks[0].timeout_secs = 18446744073709551615: must be 1 to 86400"
            ) && e.ends_with("health check \"net\""),
            "{e}"
        );
    }
}
