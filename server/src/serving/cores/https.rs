//! DNS over HTTPS (RFC 8484): the TLS handshake (ALPN `h2` or `http/1.1`),
//! then hyper on the core's executor serving `/dns-query`: GET with `?dns=`
//! (base64url) and POST of `application/dns-message`. The answer is the
//! TCP path's; `Cache-Control: max-age` is its smallest TTL. A request that
//! is not a DNS query gets 400, a wrong content type 415, a body over
//! 65535 bytes 413.

use super::*;
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Body;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// The path RFC 8484 suggests, and CoreDNS serves.
const DOH_PATH: &str = "/dns-query";
const DNS_MESSAGE: &str = "application/dns-message";
/// The most of an oversized body read (and dropped) before its 413.
const DRAIN_MOST: usize = 1 << 20;

/// base64url, with or without padding (RFC 8484 says without; some clients pad).
const BASE64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub(super) async fn serve_doh(stream: TcpStream, tls: Tls, guard: ConnectionGuard) {
    let _ = stream.set_nodelay(true);
    let client = stream.peer_addr().ok();
    let Some(stream) = tls.handshake(stream, client, Served::Doh).await else {
        return;
    };
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = Rc::new(Cell::new(Instant::now()));
    let io = HyperIo { inner: stream };
    let doh = Rc::new(Doh {
        tcp: tls.tcp.clone(),
        client,
        activity: Rc::clone(&activity),
    });
    let service = hyper::service::service_fn(move |request| respond(Rc::clone(&doh), request));
    let connection = async {
        let served = if h2 {
            // Windows sized to DNS messages (hyper's defaults let a
            // connection buffer megabytes of request bodies).
            hyper::server::conn::http2::Builder::new(LocalExecutor)
                .max_concurrent_streams(tls.https_max_streams)
                .initial_stream_window_size(64 << 10)
                .initial_connection_window_size(256 << 10)
                .serve_connection(io, service)
                .await
        } else {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
        };
        if let Err(error) = served {
            tracing::debug!(?client, %error, "DNS-over-HTTPS connection ended");
        }
    };
    let idle = close_when_idle(activity, tls.tcp.limits.idle_timeout_ms);
    futures_lite::future::or(connection, idle).await;
    drop(guard);
}

/// Returns once no request has begun or ended for `idle_timeout_ms`: the
/// TCP path's idle limit, for a connection hyper drives. Bytes alone (a
/// header sent slowly, pings) do not keep a connection.
async fn close_when_idle(activity: Rc<Cell<Instant>>, idle_timeout_ms: u64) {
    let idle = Duration::from_millis(idle_timeout_ms);
    loop {
        let quiet = activity.get().elapsed();
        if quiet >= idle {
            return;
        }
        glommio::timer::sleep(idle - quiet).await;
    }
}

/// What one connection's requests share.
struct Doh {
    tcp: Tcp,
    client: Option<std::net::SocketAddr>,
    /// When a request last began or ended.
    activity: Rc<Cell<Instant>>,
}

async fn respond(
    doh: Rc<Doh>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    doh.activity.set(Instant::now());
    // A request's body must be whole within the TCP path's body limit (a
    // GET without one needs no timer).
    let query = if request.method() == Method::GET && request.body().is_end_stream() {
        Ok(query_of(request).await)
    } else {
        glommio::timer::timeout(Duration::from_millis(TCP_BODY_TIMEOUT_MS), async {
            Ok(query_of(request).await)
        })
        .await
    };
    let response = match query {
        Ok(Ok(query)) => doh.answer(&query).await,
        Ok(Err((status, why))) => refusal(status, why),
        Err(_) => refusal(StatusCode::REQUEST_TIMEOUT, "the request came too slowly\n"),
    };
    doh.activity.set(Instant::now());
    Ok(response)
}

/// The DNS query a request carries, or the status that says what is wrong.
/// A request refused for its path, method or content type has its body
/// (if any) read first, up to [`DRAIN_MOST`]: refused before its body was
/// read, an HTTP/2 stream was reset under the client still sending it, and
/// curl, say, saw a framing error instead of the status.
async fn query_of(request: Request<Incoming>) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    match refused(&request) {
        Some(refusal) => {
            drain(request.into_body()).await;
            Err(refusal)
        }
        None => query_in(request).await,
    }
}

/// What is wrong with a request's path, method or content type, if anything.
fn refused(request: &Request<Incoming>) -> Option<(StatusCode, &'static str)> {
    if request.uri().path() != DOH_PATH {
        return Some((StatusCode::NOT_FOUND, "DNS queries go to /dns-query\n"));
    }
    match *request.method() {
        Method::GET => None,
        Method::POST => {
            let content_type = request.headers().get(header::CONTENT_TYPE);
            content_type
                .is_none_or(|t| t.as_bytes() != DNS_MESSAGE.as_bytes())
                .then_some((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "a POST carries Content-Type: application/dns-message\n",
                ))
        }
        _ => Some((
            StatusCode::METHOD_NOT_ALLOWED,
            "DNS over HTTPS takes GET and POST\n",
        )),
    }
}

/// Reads a refused request's body to its end, or until [`DRAIN_MOST`]
/// bytes or an error.
async fn drain(mut body: Incoming) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_MOST {
                return;
            }
        }
    }
}

/// The query of a GET or POST [`refused`] found nothing wrong with.
async fn query_in(request: Request<Incoming>) -> Result<Vec<u8>, (StatusCode, &'static str)> {
    match *request.method() {
        Method::GET => {
            let encoded = request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("dns=")))
                .ok_or((
                    StatusCode::BAD_REQUEST,
                    "a GET needs ?dns=QUERY (base64url)\n",
                ))?;
            BASE64URL
                .decode(encoded)
                .map_err(|_| (StatusCode::BAD_REQUEST, "?dns= is not base64url\n"))
        }
        Method::POST => {
            let too_large = (
                StatusCode::PAYLOAD_TOO_LARGE,
                "a DNS message is at most 65535 bytes\n",
            );
            let announced = request
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|l| l.to_str().ok()?.parse::<usize>().ok());
            if announced.is_some_and(|l| l > DRAIN_MOST) {
                return Err(too_large);
            }
            // A body somewhat too large is read to its end before the 413,
            // so that the client, still sending, sees the answer rather
            // than a reset; one far too large is refused at once.
            let mut body = request.into_body();
            let mut query = Vec::new();
            let mut seen = 0usize;
            while let Some(frame) = body.frame().await {
                let frame =
                    frame.map_err(|_| (StatusCode::BAD_REQUEST, "the body could not be read\n"))?;
                if let Ok(data) = frame.into_data() {
                    seen += data.len();
                    if seen <= kubewire_wire::MAX_MESSAGE {
                        query.extend_from_slice(&data);
                    } else if seen > DRAIN_MOST {
                        return Err(too_large);
                    }
                }
            }
            if seen > kubewire_wire::MAX_MESSAGE {
                return Err(too_large);
            }
            Ok(query)
        }
        _ => Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "DNS over HTTPS takes GET and POST\n",
        )),
    }
}

impl Doh {
    async fn answer(&self, query: &[u8]) -> Response<Full<Bytes>> {
        let started = std::time::Instant::now();
        let mut reply = Vec::new();
        let rcode = match answer_one(&self.tcp, self.client, query, &mut reply, 0).await {
            StreamAnswer::Reply(rcode) => rcode,
            StreamAnswer::NotAQuery => {
                return refusal(StatusCode::BAD_REQUEST, "not a DNS query\n");
            }
            StreamAnswer::NoReply => {
                return refusal(StatusCode::BAD_GATEWAY, "no DNS reply to give\n");
            }
        };
        finish_one(
            &self.tcp.shared,
            self.tcp.listen,
            started,
            self.client,
            (query, &reply),
            (Proto::Tcp, rcode),
        );
        let max_age = kubewire_wire::min_ttl(&reply).unwrap_or(0);
        let mut response = Response::new(Full::new(Bytes::from(reply)));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(DNS_MESSAGE),
        );
        if let Ok(value) =
            header::HeaderValue::from_maybe_shared(Bytes::from(format!("max-age={max_age}")))
        {
            headers.insert(header::CACHE_CONTROL, value);
        }
        response
    }
}

fn refusal(status: StatusCode, why: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(why.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    response
}

/// Spawns hyper's HTTP/2 stream tasks on the core's executor, queued
/// behind the connection's task rather than run at once (glommio's
/// `spawn_local` runs a new task right away): h2 flushes each time it
/// accepts a stream, so a stream answered at once left in a write of its
/// own, one `send` per request. Queued, the requests one read brings are
/// all answered before the connection writes, and their responses leave
/// together.
#[derive(Clone, Copy)]
struct LocalExecutor;

impl<F> hyper::rt::Executor<F> for LocalExecutor
where
    F: std::future::Future + 'static,
    F::Output: 'static,
{
    fn execute(&self, future: F) {
        let here = glommio::executor().current_task_queue();
        match glommio::spawn_local_into(future, here) {
            Ok(task) => {
                task.detach();
            }
            // The running task's own queue always exists.
            Err(error) => {
                tracing::warn!(%error, "cannot queue a DNS-over-HTTPS stream; it is dropped")
            }
        }
    }
}

/// A futures-io stream as hyper's I/O.
struct HyperIo<S> {
    inner: S,
}

impl<S: futures_lite::AsyncRead + Unpin> hyper::rt::Read for HyperIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        // Read into initialised bytes, then copy: no unsafe for hyper's
        // uninitialised buffer, at the cost of one small copy.
        let mut chunk = [0u8; 8192];
        let want = buf.remaining().min(chunk.len());
        match Pin::new(&mut self.inner).poll_read(cx, &mut chunk[..want]) {
            Poll::Ready(Ok(read)) => {
                buf.put_slice(&chunk[..read]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: futures_lite::AsyncWrite + Unpin> hyper::rt::Write for HyperIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}
