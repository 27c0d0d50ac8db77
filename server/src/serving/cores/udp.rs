//! The UDP paths: batched (recvmmsg, sendmmsg) and glommio's own.

use super::*;

/// While traffic flows, the core yields to its other tasks (TCP, updates)
/// this often. Yielding sends glommio round its reactor, which costs a
/// system call, so it is paced by time rather than done every batch.
pub(super) const YIELD_EVERY: Duration = Duration::from_micros(500);

/// The batched UDP path. While datagrams keep coming the core sleeps in
/// `recvmmsg(MSG_WAITFORONE)` itself, as a bare UDP responder would: one
/// receive and one send system call per batch. When the socket has been
/// quiet for [`UDP_FLOWING_WAIT_MS`], it parks on glommio's reactor instead,
/// so an idle core costs nothing and its other tasks run at once.
pub(super) async fn serve_udp_batched(
    socket: Rc<UdpSocket>,
    shared: Shared,
    exclusive: bool,
    listen: usize,
) {
    let fd = socket.as_raw_fd();
    // Queries of this batch the table could not finish, by index.
    let mut to_resolve: Vec<(usize, Box<QueryBuf>, Work)> = Vec::new();
    let outbox = Outbox::new(&socket);
    let mut batch = UdpBatch::new();
    let mut peek = [0u8; 1];
    let mut flowing = false;
    let mut last_yield = std::time::Instant::now();
    // Queries of this batch picked for the query log: index and RCODE.
    let mut picked: Vec<(usize, Rcode)> = Vec::with_capacity(crate::serving::batch::BATCH);
    let mut picked_top: Vec<(usize, Rcode)> = Vec::with_capacity(crate::serving::batch::BATCH);
    let mut failures = Failures::default();
    let mut pollfds: Vec<libc::pollfd> = Vec::new();
    let readiness = shared.resolver.readiness();
    let streams = &shared.streams;
    loop {
        let waiting_upstream = shared.resolver.in_progress() > 0;
        // Clients keep sending while queries wait upstream, or a stream
        // connection is busy: the core's only UDP socket sleeps in one
        // `poll` on itself, the kept upstream sockets and the connections,
        // and kicks the readers of those with bytes, instead of going round
        // glommio's reactor for each datagram and each query.
        let drive = exclusive && ((flowing && waiting_upstream) || streams.busy());
        readiness.set_driven(drive);
        streams.set_driven(drive);
        if drive {
            // Before sleeping in the kernel, let the tasks that are ready
            // run: a kicked reader wakes the queries it answers, which
            // queue their replies; each yield runs one more step of that
            // chain. Then their replies leave, in one `sendmmsg`.
            for _ in 0..SETTLE_YIELDS {
                glommio::executor().yield_now().await;
            }
            outbox.flush();
            pollfds.clear();
            for watched in [Some(fd), shared.wake_watch.as_ref().map(|w| w.as_raw_fd())] {
                pollfds.push(libc::pollfd {
                    fd: watched.unwrap_or(-1),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            pollfds.push(streams.pollfd());
            readiness.append_pollfds(&mut pollfds);
            if let Err(error) = poll(&mut pollfds, UDP_FLOWING_WAIT_MS) {
                failures.record("poll failed; retrying", &error);
            }
            let kicked = readiness.kick_ready(&pollfds[3..]);
            let (streams_kicked, to_accept) = if pollfds[2].revents != 0 {
                streams.kick_ready()
            } else {
                (0, false)
            };
            if streams_kicked > 0
                && let Some(metrics) = &shared.metrics
            {
                metrics.driven_stream_wakes(streams_kicked as u64);
            }
            if pollfds[1].revents != 0 || to_accept {
                // An update or another core's cache message is waiting, to
                // be read on the reactor, or a connection to accept there,
                // which a driven loop never parks on: wait there a moment,
                // so that its task runs now rather than at the next
                // preemption.
                glommio::timer::sleep(Duration::from_micros(1)).await;
            }
            streams.settle(streams_kicked);
            if pollfds[0].revents == 0 {
                // No client datagram: a whole tick of nothing ends the
                // flow; replies that came let their queries run (and
                // connections' queries, their tasks).
                flowing = kicked > 0;
                glommio::executor().yield_now().await;
                continue;
            }
        } else if !flowing || waiting_upstream {
            // While forwarded or chased queries wait for upstream replies,
            // the core waits on the reactor, which also reaps those
            // replies; it does not sleep in the kernel, where they would
            // wait for it.
            // Wait on the reactor until a datagram is there, without taking
            // it, or until a stream connection is busy (then it drives).
            let woken = futures_lite::future::or(
                async { socket.peek_from(&mut peek).await.map(|_| true) },
                async {
                    streams.until_busy().await;
                    Ok(false)
                },
            )
            .await;
            match woken {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    failures.record("UDP receive failed; retrying", &error);
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        // Replies resolved since the last turn leave before the loop can
        // sleep in the kernel below.
        outbox.flush();
        // Sleeping in the kernel blocks the core's other tasks, so only a
        // core's only UDP socket does it, and only while no forwarded or
        // chased query waits on the reactor for its upstream's reply;
        // otherwise it takes what is there.
        let received = if exclusive && !waiting_upstream && !drive {
            batch.receive_waiting(fd)
        } else {
            batch.receive(fd)
        };
        let count = match received {
            Ok(count) => count,
            Err(error) => {
                failures.record("recvmmsg failed; retrying", &error);
                0
            }
        };
        if count == 0 {
            flowing = false;
            glommio::executor().yield_if_needed().await;
            continue;
        }
        flowing = true;
        // Every query of a batch is charged the batch's time, from its
        // arrival in our hands to its reply leaving: one clock read per
        // batch, not two per query.
        let log_interval = QueryLog::interval(&shared.query_log_sampling);
        let started =
            (shared.metrics.is_some() || log_interval.is_some() || shared.dnstap.is_some())
                .then(std::time::Instant::now);
        apply_waiting_updates(&shared);
        {
            let mut table = shared.table.borrow_mut();
            let metrics = shared.metrics.as_deref();
            let outside = shared.outside_for_batch(started);
            crate::serving::warm::warm_batch(&batch, count, &table, outside.cache);
            let mut query_log = shared.query_log.borrow_mut();
            batch.answer(count, |i, query, out, peer| {
                let verdict = answer_udp(&mut table, outside, metrics, listen, query, out, peer);
                let (len, rcode) = match verdict {
                    Verdict::Reply(len, rcode) => (len, rcode),
                    Verdict::Resolve(query, work) => {
                        to_resolve.push((i, query, work));
                        return None;
                    }
                    Verdict::Drop => return None,
                };
                if let (Some(dnstap), Some(started)) = (&shared.dnstap, started) {
                    dnstap.client(
                        listen,
                        Proto::Udp,
                        peer.address(),
                        query,
                        &out[..len],
                        started,
                    );
                }
                if let Some(interval) = log_interval
                    && query_log.pick(interval)
                {
                    picked.push((i, rcode));
                }
                if shared.top_picks() {
                    picked_top.push((i, rcode));
                }
                Some(len)
            });
        }
        let answered = batch.queued() as u64;
        send_all(&mut batch, fd).await;
        // Resolving tasks (and readers the poll kicked) run before the
        // loop sleeps in the kernel again.
        let resolving = !to_resolve.is_empty() || drive;
        for (i, query, work) in to_resolve.drain(..) {
            if let Some(peer) = batch.peer(i) {
                spawn_udp_resolve(&shared, &outbox, listen, query, work, peer);
            }
        }
        if let (Some(metrics), Some(started)) = (&shared.metrics, started) {
            metrics.took(listen, answered, elapsed_ns(started));
        }
        for (i, rcode) in picked_top.drain(..) {
            shared.count_top(batch.query(i), batch.peer(i), rcode);
        }
        if !picked.is_empty() {
            let mut query_log = shared.query_log.borrow_mut();
            let took = started.map(|s| s.elapsed()).unwrap_or_default();
            for &(i, rcode) in &picked {
                query_log.write(
                    &shared.query_log_sampling,
                    batch.peer(i),
                    batch.query(i),
                    rcode,
                    took,
                );
            }
            picked.clear();
        }
        if resolving || last_yield.elapsed() >= YIELD_EVERY || glommio::executor().need_preempt() {
            // Updates are applied here too: while traffic flows the root
            // task's wake-up may not be reaped until the next preemption.
            apply_updates(&shared);
            glommio::executor().yield_now().await;
            last_yield = std::time::Instant::now();
        }
    }
}

/// Yields before the driven UDP loop sleeps in `poll`: enough for a kicked
/// reader, the query it wakes, and a cache's waiters behind it, to run.
pub(super) const SETTLE_YIELDS: usize = 3;

/// `poll(2)` on `fds` for at most `timeout_ms`; the result is in each
/// entry's `revents`.
pub(super) fn poll(fds: &mut [libc::pollfd], timeout_ms: u64) -> std::io::Result<()> {
    let timeout = libc::c_int::try_from(timeout_ms).unwrap_or(libc::c_int::MAX);
    // SAFETY: `fds` is a live, exclusive slice of `pollfd`s, and its length
    // is passed with it.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if ready < 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    Ok(())
}

/// Sends every queued reply. A full socket buffer is waited out briefly; a
/// reply that still cannot go is dropped, as the network would drop it.
pub(super) async fn send_all(batch: &mut UdpBatch, fd: RawFd) {
    let mut first = 0usize;
    let mut stalls = 0u32;
    while first < batch.queued() {
        match batch.send(fd, first) {
            Ok(0) => {
                stalls += 1;
                if stalls > 20 {
                    tracing::debug!(
                        dropped = batch.queued() - first,
                        "UDP send buffer full; replies dropped"
                    );
                    return;
                }
                glommio::timer::sleep(Duration::from_micros(50)).await;
            }
            Ok(sent) => first += sent,
            Err(error) => {
                // This one reply cannot go (an unreachable peer, say): skip it.
                tracing::debug!(%error, "UDP reply not sent");
                first += 1;
            }
        }
    }
}

pub(super) async fn serve_udp_glommio(socket: Rc<UdpSocket>, shared: Shared, listen: usize) {
    let mut query = vec![0u8; 65_536];
    let mut out = vec![0u8; usize::from(kubewire_wire::OUR_UDP_PAYLOAD)];
    let outbox = Outbox::new(&socket);
    let mut failures = Failures::default();
    loop {
        let (len, peer) = match socket.recv_from(&mut query).await {
            Ok(received) => received,
            Err(error) => {
                failures.record("UDP receive failed; retrying", &error);
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        apply_waiting_updates(&shared);
        let started = std::time::Instant::now();
        let answered = answer(
            &mut shared.table.borrow_mut(),
            shared.outside(),
            shared.metrics.as_deref(),
            listen,
            Proto::Udp,
            &query[..len],
            &mut out,
            || Some(peer.ip()),
        );
        let (reply, rcode) = match answered {
            Verdict::Reply(reply, rcode) => (reply, rcode),
            Verdict::Resolve(query, work) => {
                spawn_udp_resolve(&shared, &outbox, listen, query, work, peer);
                continue;
            }
            Verdict::Drop => continue,
        };
        if let Err(error) = socket.send_to(&out[..reply], peer).await {
            tracing::debug!(%error, "UDP reply not sent");
        }
        finish_one(
            &shared,
            listen,
            started,
            Some(peer),
            (&query[..len], &out[..reply]),
            (Proto::Udp, rcode),
        );
    }
}

/// Times one query and offers it to the query log.
pub(super) fn finish_one(
    shared: &Shared,
    listen: usize,
    started: std::time::Instant,
    client: Option<std::net::SocketAddr>,
    (query, reply): (&[u8], &[u8]),
    (proto, rcode): (Proto, Rcode),
) {
    if let Some(dnstap) = &shared.dnstap {
        dnstap.client(listen, proto, client, query, reply, started);
    }
    if let Some(metrics) = &shared.metrics {
        metrics.took(listen, 1, elapsed_ns(started));
    }
    if shared.top_picks() {
        shared.count_top(query, client, rcode);
    }
    if let Some(interval) = QueryLog::interval(&shared.query_log_sampling) {
        let mut query_log = shared.query_log.borrow_mut();
        if query_log.pick(interval) {
            query_log.write(
                &shared.query_log_sampling,
                client,
                query,
                rcode,
                started.elapsed(),
            );
        }
    }
}
