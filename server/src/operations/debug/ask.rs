//! `kubewire explain` and `kubewire top`: ask the endpoint over HTTP and
//! print what it says.

use super::{EXPLAIN_PATH, Explained, TOP_PATH, TopReport, read_token};

/// `kubewire explain` and `kubewire top`: where and how to ask.
#[derive(clap::Args, Debug, Clone)]
pub struct AskArgs {
    /// The debug endpoint (http.debug_addr).
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:9155")]
    pub server: String,
    /// A file holding the bearer token (http.debug_token_file).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<String>,
    /// Print JSON, for scripts.
    #[arg(long)]
    pub json: bool,
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Why asking the debug endpoint failed.
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// `--server` is not an http:// URL.
    #[error("--server {0:?} is not an http://HOST:PORT URL")]
    Server(String),
    /// The token file.
    #[error("{0}")]
    Token(String),
    /// The request did not get through.
    #[error("cannot reach {server} (is http.debug_addr set on the server?): {source}")]
    Unreachable {
        /// The server.
        server: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The answer's body.
    #[error("reading the answer: {0}")]
    Body(#[from] hyper::Error),
    /// The endpoint refused.
    #[error("{status}: {text}")]
    Refused {
        /// The status.
        status: u16,
        /// What it said.
        text: String,
    },
    /// The answer is not what was expected.
    #[error("the answer does not parse (a kubewire of another version?): {0}")]
    Json(#[from] serde_json::Error),
    /// No runtime.
    #[error("cannot start a runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// GETs `path_and_query` from the debug endpoint.
fn get(args: &AskArgs, path_and_query: &str) -> Result<bytes::Bytes, AskError> {
    use http_body_util::BodyExt;
    let server = args.server.trim_end_matches('/');
    if !server.starts_with("http://") {
        return Err(AskError::Server(args.server.clone()));
    }
    let uri: hyper::Uri = format!("{server}{path_and_query}")
        .parse()
        .map_err(|_| AskError::Server(args.server.clone()))?;
    let token = args
        .token_file
        .as_deref()
        .map(read_token)
        .transpose()
        .map_err(AskError::Token)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<http_body_util::Empty<bytes::Bytes>>();
        let mut request = hyper::Request::get(uri);
        if let Some(token) = &token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let request = request
            .body(http_body_util::Empty::new())
            .map_err(|_| AskError::Server(args.server.clone()))?;
        let response = client
            .request(request)
            .await
            .map_err(|source| AskError::Unreachable {
                server: args.server.clone(),
                source,
            })?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            return Err(AskError::Refused {
                status: status.as_u16(),
                text: String::from_utf8_lossy(&body).trim().to_string(),
            });
        }
        Ok(body)
    })
}

/// `kubewire explain NAME [TYPE] [--from CLIENT]`: prints the report.
pub fn explain_command(
    args: &AskArgs,
    name: &str,
    qtype: Option<&str>,
    from: Option<&str>,
) -> Result<String, AskError> {
    let mut query = format!("{EXPLAIN_PATH}?name={}", encode(name));
    if let Some(qtype) = qtype {
        query.push_str(&format!("&type={}", encode(qtype)));
    }
    if let Some(from) = from {
        query.push_str(&format!("&from={}", encode(from)));
    }
    let body = get(args, &query)?;
    if args.json {
        return Ok(String::from_utf8_lossy(&body).into_owned());
    }
    let explained: Explained = serde_json::from_slice(&body)?;
    Ok(explained.to_string())
}

/// `kubewire top`: prints the report.
pub fn top_command(args: &AskArgs) -> Result<String, AskError> {
    let body = get(args, TOP_PATH)?;
    if args.json {
        return Ok(String::from_utf8_lossy(&body).into_owned());
    }
    let report: TopReport = serde_json::from_slice(&body)?;
    Ok(report.to_string())
}
