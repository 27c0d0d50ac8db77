//! The optional query log: one query in N, at most M lines per second per
//! core, each with the client, name, type, RCODE and duration. Off by
//! default; when off it costs one relaxed load per batch.
//!
//! Lines go to tracing at info under the target `kubewire::query`, so they
//! can be filtered apart (`log.level = "info,kubewire::query=off"`).

pub use crate::operations::logging::QueryLogSampling;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// One core's sampler and rate limiter.
#[derive(Debug)]
pub struct QueryLog {
    seen: u64,
    window_start: Instant,
    logged_in_window: u32,
    suppressed: u64,
}

impl Default for QueryLog {
    fn default() -> QueryLog {
        QueryLog {
            seen: 0,
            window_start: Instant::now(),
            logged_in_window: 0,
            suppressed: 0,
        }
    }
}

impl QueryLog {
    /// The sampling interval in force, or `None` when the log is off.
    #[inline]
    pub fn interval(settings: &QueryLogSampling) -> Option<u64> {
        match settings.sample.load(Ordering::Relaxed) {
            0 => None,
            n => Some(u64::from(n)),
        }
    }

    /// Whether this query is one to log, given the interval.
    #[inline]
    pub fn pick(&mut self, interval: u64) -> bool {
        self.seen = self.seen.wrapping_add(1);
        self.seen.is_multiple_of(interval)
    }

    /// Logs a picked query, unless this second's budget is spent.
    pub fn write(
        &mut self,
        settings: &QueryLogSampling,
        client: Option<SocketAddr>,
        query: &[u8],
        rcode: kubewire_wire::Rcode,
        duration: Duration,
    ) {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= Duration::from_secs(1) {
            if self.suppressed > 0 {
                tracing::info!(
                    target: "kubewire::query",
                    suppressed = self.suppressed,
                    "query log rate limit reached; lines were skipped"
                );
            }
            self.window_start = now;
            self.logged_in_window = 0;
            self.suppressed = 0;
        }
        if self.logged_in_window >= settings.max_per_second.load(Ordering::Relaxed) {
            self.suppressed += 1;
            return;
        }
        self.logged_in_window += 1;
        let (name, qtype) = match kubewire_wire::parse_query(query) {
            Ok(parsed) => (
                kubewire_wire::name::to_text(parsed.key().as_wire()),
                rtype_name(parsed.qtype()),
            ),
            Err(_) => ("-".to_string(), "-".to_string()),
        };
        let client = client.map_or_else(|| "-".to_string(), |c| c.to_string());
        tracing::info!(
            target: "kubewire::query",
            client = %client,
            name = %name,
            qtype = %qtype,
            rcode = %rcode,
            duration_us = duration.as_micros() as u64,
            "query"
        );
    }
}

fn rtype_name(qtype: u16) -> String {
    kubewire_wire::rtype::name(qtype).map_or_else(|| format!("TYPE{qtype}"), str::to_string)
}
