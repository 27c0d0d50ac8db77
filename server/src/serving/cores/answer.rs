//! Answering a query: the table's verdict, counted, and the slow path
//! (the core's resolver) for what the table does not hold.

use super::*;

/// What [`answer`] did with a query: the one verdict, for UDP and TCP.
#[derive(Debug)]
pub(super) enum Verdict {
    /// A reply of this length and RCODE is in the buffer.
    Reply(usize, Rcode),
    /// The table could not finish it: the resolver does the rest, with the
    /// query parsed here.
    Resolve(Box<QueryBuf>, Work),
    /// Send nothing.
    Drop,
}

/// Answers one query into `out` and counts it, or says what the resolver
/// must do with it.
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) fn answer(
    table: &mut AnswerTable,
    outside: Outside<'_>,
    metrics: Option<&CoreMetrics>,
    listen: usize,
    proto: Proto,
    query: &[u8],
    out: &mut [u8],
    client: impl FnOnce() -> Option<std::net::IpAddr>,
) -> Verdict {
    #[cfg(debug_assertions)]
    injected_panic(query);
    let transport = match proto {
        Proto::Udp => Transport::Udp,
        Proto::Tcp => Transport::Tcp,
    };
    // Parsed once, here: a name the table does not hold goes on, parsed,
    // to the forwarder's zones, the cache and the resolver. A malformed
    // query is left to `respond`, which writes its error reply.
    let parsed = kubewire_wire::parse_query(query);
    let response = match &parsed {
        Ok(parsed) => table.respond_to(parsed, transport, out),
        Err(_) => table.respond(query, transport, out),
    };
    let (len, rcode, qtype, plugin) = match response {
        Response::Reply {
            len,
            rcode,
            qtype,
            chase,
        } => {
            if chase && let Ok(parsed) = &parsed {
                return Verdict::Resolve(
                    Box::new(parsed.to_buf()),
                    Work::Chase(out[..len].to_vec()),
                );
            }
            if rcode == Rcode::NXDOMAIN
                && let Some(_) = outside.autopath
                && let Ok(parsed) = &parsed
                && let Some(candidate) = autopath_candidate(table, parsed, client)
            {
                let work = Work::Autopath(out[..len].to_vec(), Box::new(candidate));
                return Verdict::Resolve(Box::new(parsed.to_buf()), work);
            }
            (len, rcode, qtype, Plugin::Kubernetes)
        }
        Response::NotOurs { len, qtype } => {
            let forwarded = match (outside.forwarder, &parsed) {
                (Some(forwarder), Ok(parsed)) => forwarder.wants_query(parsed).then_some(parsed),
                _ => None,
            };
            let Some(parsed) = forwarded else {
                let refused = Rcode::REFUSED;
                let len = count(
                    metrics,
                    listen,
                    proto,
                    query,
                    len,
                    qtype,
                    refused,
                    Plugin::None,
                );
                return Verdict::Reply(len, refused);
            };
            let Some(cache) = outside.cache else {
                return Verdict::Resolve(Box::new(parsed.to_buf()), Work::Forward);
            };
            if LoopProbes::is_probe(parsed.key()) {
                return Verdict::Resolve(Box::new(parsed.to_buf()), Work::Forward);
            }
            let now = outside.now.unwrap_or_else(std::time::Instant::now);
            match cache.borrow_mut().answer(parsed, now, transport, out) {
                Lookup::Hit { len, rcode } => (len, rcode, qtype, Plugin::Cache),
                Lookup::Miss => return Verdict::Resolve(Box::new(parsed.to_buf()), Work::Forward),
            }
        }
        Response::Drop => {
            if let Some(metrics) = metrics {
                metrics.dropped();
            }
            return Verdict::Drop;
        }
    };
    Verdict::Reply(
        count(metrics, listen, proto, query, len, qtype, rcode, plugin),
        rcode,
    )
}

/// [`answer`] for a UDP query from `peer`, whose address is only read if
/// autopath asks for it.
#[inline]
pub(super) fn answer_udp(
    table: &mut AnswerTable,
    outside: Outside<'_>,
    metrics: Option<&CoreMetrics>,
    listen: usize,
    query: &[u8],
    out: &mut [u8],
    peer: kubewire_udp::Peer<'_>,
) -> Verdict {
    answer(
        table,
        outside,
        metrics,
        listen,
        Proto::Udp,
        query,
        out,
        || peer.ip(),
    )
}

/// Whether an NXDOMAIN'd query is the first search candidate of the pod
/// that sent it (the client's address is only looked at here).
#[cold]
pub(super) fn autopath_candidate(
    table: &AnswerTable,
    query: &kubewire_wire::Query<'_>,
    client: impl FnOnce() -> Option<std::net::IpAddr>,
) -> Option<autopath::Candidate> {
    let namespace = table.client_namespace(client()?)?;
    autopath::first_candidate(table, query.key(), namespace)
}

/// Counts one reply of `len` bytes; returns `len`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(super) fn count(
    metrics: Option<&CoreMetrics>,
    listen: usize,
    proto: Proto,
    query: &[u8],
    len: usize,
    qtype: u16,
    rcode: Rcode,
    plugin: Plugin,
) -> usize {
    if let Some(metrics) = metrics {
        metrics.answered(&Answered {
            listen,
            proto,
            qtype,
            rcode,
            plugin,
            request_len: query.len(),
            response_len: len,
        });
    }
    len
}

/// Where names outside the cluster zones go, for [`answer`].
#[derive(Clone, Copy)]
pub(super) struct Outside<'a> {
    forwarder: Option<&'a Forwarder>,
    pub(super) cache: Option<&'a RefCell<CoreCache>>,
    autopath: Option<&'a AutopathPlan>,
    /// The time for the cache's lookups, read once for a whole batch; the
    /// clock is read per query where this is `None`.
    now: Option<std::time::Instant>,
}

impl Shared {
    pub(super) fn outside(&self) -> Outside<'_> {
        Outside {
            forwarder: self.resolver.forwarder(),
            cache: self.resolver.cache(),
            autopath: self.resolver.autopath(),
            now: None,
        }
    }

    /// [`Shared::outside`] for a batch of UDP queries: with the cache on,
    /// the clock is read once for the batch (or its start, `started`, is
    /// taken), not once per query.
    pub(super) fn outside_for_batch(&self, started: Option<std::time::Instant>) -> Outside<'_> {
        let mut outside = self.outside();
        if outside.cache.is_some() {
            outside.now = Some(started.unwrap_or_else(std::time::Instant::now));
        }
        outside
    }
}

/// Has the resolver finish a query and counts its reply; `None` when there
/// is nothing to send.
pub(super) async fn resolve(
    shared: &Shared,
    listen: usize,
    proto: Proto,
    query: &QueryBuf,
    work: Work,
) -> Option<Resolved> {
    let transport = match proto {
        Proto::Udp => Transport::Udp,
        Proto::Tcp => Transport::Tcp,
    };
    let resolved = shared.resolver.resolve(query, work, transport).await?;
    if let Some(metrics) = &shared.metrics {
        if resolved.plugin == Plugin::Autopath {
            metrics.autopath_success(listen);
        }
        let query = query.query();
        metrics.answered(&Answered {
            listen,
            proto,
            qtype: query.qtype(),
            rcode: resolved.rcode,
            plugin: resolved.plugin,
            request_len: query.packet().len(),
            response_len: resolved.reply.len(),
        });
    }
    Some(resolved)
}

/// Resolves a UDP query on its own task; the reply goes out through
/// `outbox`, with the others that finish in the same turn.
pub(super) fn spawn_udp_resolve(
    shared: &Shared,
    outbox: &Rc<Outbox>,
    listen: usize,
    query: Box<QueryBuf>,
    work: Work,
    peer: std::net::SocketAddr,
) {
    let shared = shared.clone();
    let outbox = Rc::clone(outbox);
    let in_progress = shared.resolver.start();
    glommio::spawn_local(async move {
        let _in_progress = in_progress;
        let started = std::time::Instant::now();
        let Some(resolved) = resolve(&shared, listen, Proto::Udp, &query, work).await else {
            return;
        };
        finish_one(
            &shared,
            listen,
            started,
            Some(peer),
            (query.query().packet(), &resolved.reply),
            (Proto::Udp, resolved.rcode),
        );
        outbox.push(resolved.reply, peer);
    })
    .detach();
}

pub(super) fn elapsed_ns(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
