//! The real peers kubewire is tested and measured against: etcd and
//! kube-apiserver (the real API under the tests' real tier), and CoreDNS
//! (beside kubewire in the benchmarks). `bench/peers/build.sh` builds them
//! from their Go modules, at the versions in `bench/peers/versions.env`,
//! into `$KUBEWIRE_PEERS_DIR/bin` (default `~/.cache/kubewire-peers/bin`).
//!
//! [`RealApi`] starts etcd and kube-apiserver on loopback as envtest does:
//! etcd with a temporary data directory and `--unsafe-no-fsync`;
//! kube-apiserver with a serving certificate from a CA made here, static
//! tokens (`--token-auth-file`), RBAC, a service-account signing key and
//! dual-stack service ranges. No controller runs: the tests write
//! EndpointSlices and pod status themselves.
//!
//! A peer that fails says which peer, what it was asked, and its last log
//! lines; nothing waits past its timeout.

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The variable that turns a missing peer from a skip into a failure (CI).
pub const REQUIRE_PEERS: &str = "KUBEWIRE_REQUIRE_PEERS";

/// The script that builds the peers.
pub const BUILD_SCRIPT: &str = "bench/peers/build.sh";

/// The static token of the API server's admin (`system:masters`).
pub const ADMIN_TOKEN: &str = "kubewire-test-admin";

/// How long a peer may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// What went wrong with a peer.
#[derive(Debug)]
pub enum PeerError {
    /// The binary is not built.
    Missing {
        /// The peer.
        peer: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// It would not start, or died, or did not answer in time.
    Failed {
        /// The peer.
        peer: &'static str,
        /// What it was asked to do.
        doing: String,
        /// Why it failed.
        why: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A request to the API failed.
    Api {
        /// What was asked.
        doing: String,
        /// The client's error.
        source: kube::Error,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Missing { peer, path } => write!(
                f,
                "{peer} is not built (looked for {}); run {BUILD_SCRIPT} to build the Go peers",
                path.display()
            ),
            PeerError::Failed {
                peer,
                doing,
                why,
                log_tail,
            } => write!(
                f,
                "{peer} failed while {doing}: {why}\n--- last lines of {peer}'s log ---\n{log_tail}"
            ),
            PeerError::Api { doing, source } => {
                write!(f, "the API server refused {doing}: {source}")
            }
        }
    }
}

impl std::error::Error for PeerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PeerError::Api { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Where the peers are built: `$KUBEWIRE_PEERS_DIR`, else
/// `~/.cache/kubewire-peers`.
pub fn peers_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBEWIRE_PEERS_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/kubewire-peers")
}

/// A peer's binary, if built.
pub fn binary(peer: &'static str) -> Result<PathBuf, PeerError> {
    let path = peers_dir().join("bin").join(peer);
    if path.is_file() {
        Ok(path)
    } else {
        Err(PeerError::Missing { peer, path })
    }
}

/// Whether missing peers must fail rather than skip ([`REQUIRE_PEERS`]=1).
pub fn peers_required() -> bool {
    std::env::var(REQUIRE_PEERS).is_ok_and(|v| v == "1")
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Starts `command` with `PR_SET_PDEATHSIG`: the kernel kills the child
/// when the thread that started it ends, even if the test binary is killed,
/// so no peer outlives its test. A peer shared by a whole test binary is
/// started from a thread that never ends ([`shared_real_api`]).
fn spawn_with_death_signal(mut command: Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// A running peer process, logging to a file; killed on drop.
#[derive(Debug)]
pub struct Peer {
    name: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Peer {
    /// Starts `binary` with `args`, its output to `log`.
    pub fn start(
        name: &'static str,
        binary: &Path,
        args: &[String],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Result<Peer, PeerError> {
        let failed = |why: String| PeerError::Failed {
            peer: name,
            doing: format!("starting {} {}", binary.display(), args.join(" ")),
            why,
            log_tail: String::new(),
        };
        let out = File::create(&log).map_err(|e| failed(format!("log {}: {e}", log.display())))?;
        let err = out.try_clone().map_err(|e| failed(e.to_string()))?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = spawn_with_death_signal(command).map_err(|e| failed(e.to_string()))?;
        Ok(Peer {
            name,
            child: Some(child),
            log,
        })
    }

    /// A peer not running yet, whose log will be `log`.
    fn stopped(name: &'static str, log: PathBuf) -> Peer {
        Peer {
            name,
            child: None,
            log,
        }
    }

    /// The peer's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The process ID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Its whole log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails with the peer's log if it has exited.
    pub fn check_running(&mut self, doing: &str) -> Result<(), PeerError> {
        let status = match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => return Ok(()),
            Some(Ok(Some(status))) => format!("it exited: {status}"),
            Some(Err(e)) => format!("cannot wait for it: {e}"),
            None => "it was stopped".into(),
        };
        Err(self.failed(doing, status))
    }

    /// An error for this peer, with its log's tail.
    pub fn failed(&self, doing: &str, why: String) -> PeerError {
        PeerError::Failed {
            peer: self.name,
            doing: doing.into(),
            why,
            log_tail: self.log_tail(30),
        }
    }

    /// Kills it (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops it with SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            // SAFETY: kill(2) on our own child's pid.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `ready` every 50 ms until it holds, the peer dies, or `timeout`.
fn wait_until(
    peer: &mut Peer,
    doing: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), PeerError> {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(());
        }
        peer.check_running(doing)?;
        if Instant::now() > deadline {
            return Err(peer.failed(doing, format!("not ready after {timeout:?}")));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A plain HTTP/1.1 request on loopback (etcd's JSON gateway), returning
/// the status and body.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// etcd on loopback.
#[derive(Debug)]
pub struct Etcd {
    peer: Peer,
    client: SocketAddr,
    peer_port: u16,
    data_dir: PathBuf,
}

impl Etcd {
    /// Starts etcd in `dir`, and waits for its health.
    pub fn start(dir: &Path) -> Result<Etcd, PeerError> {
        let binary = binary("etcd")?;
        let client: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let peer_port = free_port();
        let data_dir = dir.join("etcd-data");
        let mut etcd = Etcd {
            peer: Peer::stopped("etcd", dir.join("etcd.log")),
            client,
            peer_port,
            data_dir,
        };
        etcd.run(&binary)?;
        Ok(etcd)
    }

    fn run(&mut self, binary: &Path) -> Result<(), PeerError> {
        let client = format!("http://{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let args: Vec<String> = [
            "--name=kubewire-test",
            &format!("--data-dir={}", self.data_dir.display()),
            &format!("--listen-client-urls={client}"),
            &format!("--advertise-client-urls={client}"),
            &format!("--listen-peer-urls={peer}"),
            &format!("--initial-advertise-peer-urls={peer}"),
            &format!("--initial-cluster=kubewire-test={peer}"),
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]
        .map(String::from)
        .into();
        let log = self.data_dir.with_file_name("etcd.log");
        self.peer = Peer::start("etcd", binary, &args, &[], log)?;
        let addr = self.client;
        wait_until(
            &mut self.peer,
            "starting up (GET /health)",
            READY_TIMEOUT,
            || http(addr, "GET", "/health", "").is_ok_and(|(s, b)| s == 200 && b.contains("true")),
        )
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Compacts the history up to the current revision, so that a watch
    /// resumed from an older resourceVersion gets 410 Gone.
    pub fn compact(&mut self) -> Result<u64, PeerError> {
        let doing = "compacting (POST /v3/kv/compaction)";
        let (_, status) = http(self.client, "POST", "/v3/maintenance/status", "{}")
            .map_err(|e| self.peer.failed(doing, e.to_string()))?;
        let status: Value = serde_json::from_str(&status)
            .map_err(|e| self.peer.failed(doing, format!("status: {e}: {status}")))?;
        let revision: u64 = status["header"]["revision"]
            .as_str()
            .and_then(|r| r.parse().ok())
            .ok_or_else(|| self.peer.failed(doing, format!("no revision in {status}")))?;
        let body = json!({"revision": revision.to_string(), "physical": true}).to_string();
        match http(self.client, "POST", "/v3/kv/compaction", &body) {
            Ok((200, _)) => Ok(revision),
            Ok((code, body)) => Err(self.peer.failed(doing, format!("HTTP {code}: {body}"))),
            Err(e) => Err(self.peer.failed(doing, e.to_string())),
        }
    }
}

/// The certificates, keys and tokens of a test API server.
struct Credentials;

impl Credentials {
    /// Writes a CA, a serving certificate for 127.0.0.1 signed by it, a
    /// service-account signing key and the token file into `dir`.
    fn write(dir: &Path, tokens: &[(&str, &str, &str)]) -> Result<(), String> {
        let e = |e: rcgen::Error| e.to_string();
        let ca_key = rcgen::KeyPair::generate().map_err(e)?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubewire-test-ca");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(e)?;
        let serving_key = rcgen::KeyPair::generate().map_err(e)?;
        let serving_params = rcgen::CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "localhost".to_string(),
            "kubernetes.default.svc".to_string(),
        ])
        .map_err(e)?;
        let serving = serving_params.signed_by(&serving_key, &ca).map_err(e)?;
        let sa_key = rcgen::KeyPair::generate().map_err(e)?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"))
        };
        write("ca.crt", &ca.pem())?;
        write("apiserver.crt", &serving.pem())?;
        write("apiserver.key", &serving_key.serialize_pem())?;
        write("sa.key", &sa_key.serialize_pem())?;
        write("sa.pub", &sa_key.public_key_pem())?;
        let lines: Vec<String> = tokens
            .iter()
            .map(|(token, user, groups)| format!("{token},{user},{user},\"{groups}\""))
            .collect();
        write("tokens.csv", &(lines.join("\n") + "\n"))?;
        Ok(())
    }
}

/// etcd and kube-apiserver on loopback, with an admin client.
pub struct RealApi {
    dir: PathBuf,
    etcd: Etcd,
    apiserver: Peer,
    apiserver_addr: SocketAddr,
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
}

impl RealApi {
    /// Starts etcd and kube-apiserver in a new directory under the system
    /// temporary directory, and waits until `/readyz` answers 200 and the
    /// default namespace exists.
    pub fn start() -> Result<RealApi, PeerError> {
        remove_dead_runs_dirs();
        let dir = std::env::temp_dir().join(format!(
            "{REAL_API_DIR_PREFIX}{}-{}",
            std::process::id(),
            free_port()
        ));
        let setup = |why: String| PeerError::Failed {
            peer: "kube-apiserver",
            doing: format!("preparing {}", dir.display()),
            why,
            log_tail: String::new(),
        };
        std::fs::create_dir_all(&dir).map_err(|e| setup(e.to_string()))?;
        binary("kube-apiserver")?;
        Credentials::write(&dir, &[(ADMIN_TOKEN, "admin", "system:masters")]).map_err(setup)?;
        let etcd = Etcd::start(&dir)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| setup(e.to_string()))?;
        let apiserver_addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let placeholder = Peer::stopped("kube-apiserver", dir.join("kube-apiserver.log"));
        let kubeconfig = kubeconfig_text(&apiserver_addr, &dir.join("ca.crt"), ADMIN_TOKEN);
        let client = runtime
            .block_on(client_from(&kubeconfig))
            .map_err(|e| setup(format!("the admin client: {e}")))?;
        let mut api = RealApi {
            dir,
            etcd,
            apiserver: placeholder,
            apiserver_addr,
            runtime,
            client,
        };
        api.start_apiserver()?;
        Ok(api)
    }

    /// Starts (or starts again) kube-apiserver on its port, and waits until
    /// it is ready and the default namespace exists.
    pub fn start_apiserver(&mut self) -> Result<(), PeerError> {
        let binary = binary("kube-apiserver")?;
        let d = |name: &str| self.dir.join(name).display().to_string();
        let args: Vec<String> = vec![
            format!("--etcd-servers={}", self.etcd.url()),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={}", self.apiserver_addr.port()),
            format!("--cert-dir={}", d("certs")),
            format!("--tls-cert-file={}", d("apiserver.crt")),
            format!("--tls-private-key-file={}", d("apiserver.key")),
            format!("--client-ca-file={}", d("ca.crt")),
            format!("--token-auth-file={}", d("tokens.csv")),
            "--authorization-mode=RBAC".into(),
            "--anonymous-auth=false".into(),
            format!("--service-account-key-file={}", d("sa.pub")),
            format!("--service-account-signing-key-file={}", d("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/112".into(),
            "--allow-privileged=true".into(),
            // No controllers run: nothing would create a pod's token.
            "--disable-admission-plugins=ServiceAccount".into(),
            "--v=0".into(),
        ];
        let log = self.dir.join("kube-apiserver.log");
        self.apiserver = Peer::start("kube-apiserver", &binary, &args, &[], log)?;
        let (runtime, client) = (&self.runtime, &self.client);
        wait_until(
            &mut self.apiserver,
            "waiting for /readyz",
            READY_TIMEOUT,
            || {
                let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
                    Api::all(client.clone());
                runtime.block_on(async {
                    client
                        .request_text(http_get("/readyz"))
                        .await
                        .is_ok_and(|t| t.trim() == "ok")
                        && namespaces
                            .get_opt("default")
                            .await
                            .is_ok_and(|n| n.is_some())
                })
            },
        )
    }

    /// Kills kube-apiserver (SIGKILL).
    pub fn kill_apiserver(&mut self) {
        self.apiserver.kill();
    }

    /// etcd, to compact.
    pub fn etcd(&mut self) -> &mut Etcd {
        &mut self.etcd
    }

    /// kube-apiserver's log so far.
    pub fn apiserver_log(&self) -> String {
        self.apiserver.log()
    }

    /// The API server's URL.
    pub fn url(&self) -> String {
        format!("https://{}", self.apiserver_addr)
    }

    /// The admin client.
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Runs a future on the harness's runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The API server's address.
    pub fn addr(&self) -> SocketAddr {
        self.apiserver_addr
    }

    /// Writes a kubeconfig that authenticates with `token` into `dir`.
    pub fn write_kubeconfig(&self, dir: &Path, token: &str) -> std::io::Result<PathBuf> {
        self.write_kubeconfig_at(dir, token, self.apiserver_addr)
    }

    /// [`RealApi::write_kubeconfig`] with the server at `addr`, a relay's
    /// in front of the API server (on loopback, which its certificate
    /// names).
    pub fn write_kubeconfig_at(
        &self,
        dir: &Path,
        token: &str,
        addr: SocketAddr,
    ) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("kubeconfig");
        let ca_file = self.dir.join("ca.crt");
        std::fs::write(&path, kubeconfig_text(&addr, &ca_file, token))?;
        Ok(path)
    }

    /// Creates or updates `object` (server-side apply, as `kubectl apply
    /// --server-side --force-conflicts`), and then its `status`, if it has
    /// one, through the status subresource (no controller writes it here).
    pub fn apply(&self, object: &Value) -> Result<(), PeerError> {
        let (api, name) = self.api_for(object)?;
        self.runtime.block_on(apply_one(api, name, object.clone()))
    }

    /// [`RealApi::apply`] for many objects, `concurrency` requests at a
    /// time, in no particular order.
    pub fn apply_many(&self, objects: Vec<Value>, concurrency: usize) -> Result<(), PeerError> {
        use futures_util::stream::{self, StreamExt};
        let mut requests = Vec::with_capacity(objects.len());
        for object in objects {
            let (api, name) = self.api_for(&object)?;
            requests.push(apply_one(api, name, object));
        }
        self.runtime.block_on(async {
            let mut results = stream::iter(requests).buffer_unordered(concurrency.max(1));
            while let Some(result) = results.next().await {
                result?;
            }
            Ok(())
        })
    }

    /// The CA that signed the API server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// Deletes the object `object` names (its apiVersion, kind, namespace
    /// and name), at once (grace period 0).
    pub fn delete(&self, object: &Value) -> Result<(), PeerError> {
        let (api, name) = self.api_for(object)?;
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        };
        self.runtime
            .block_on(api.delete(&name, &params))
            .map(|_| ())
            .map_err(|source| PeerError::Api {
                doing: format!("deleting {} {name}", object["kind"]),
                source,
            })
    }

    /// A token for ServiceAccount `namespace/name`, from the TokenRequest
    /// API, valid for an hour.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> Result<String, PeerError> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            }),
            ..TokenRequest::default()
        };
        let doing = format!("a token for ServiceAccount {namespace}/{name}");
        let created = self
            .runtime
            .block_on(api.create_token_request(name, &Default::default(), &request))
            .map_err(|source| PeerError::Api {
                doing: doing.clone(),
                source,
            })?;
        created
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| PeerError::Failed {
                peer: "kube-apiserver",
                doing,
                why: "the TokenRequest came back without a token".into(),
                log_tail: self.apiserver.log_tail(30),
            })
    }

    /// The dynamic API for `object`'s kind, and its name.
    fn api_for(&self, object: &Value) -> Result<(Api<DynamicObject>, String), PeerError> {
        let text = |key: &str| object["metadata"][key].as_str().map(String::from);
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let resource = ApiResource::from_gvk_with_plural(&gvk, &plural(kind));
        let name = text("name").ok_or_else(|| PeerError::Failed {
            peer: "kube-apiserver",
            doing: format!("reading a {kind}"),
            why: "the object has no metadata.name".into(),
            log_tail: String::new(),
        })?;
        let api = match text("namespace") {
            Some(namespace) => Api::namespaced_with(self.client.clone(), &namespace, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        };
        Ok((api, name))
    }
}

impl fmt::Debug for RealApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RealApi")
            .field("url", &self.url())
            .field("etcd", &self.etcd.url())
            .finish()
    }
}

/// The start of a [`RealApi`]'s directory's name, before `PID-PORT`.
const REAL_API_DIR_PREFIX: &str = "kubewire-real-api-";

/// Removes the directories (etcd's data is 100 MB and more) of API servers
/// whose process has ended without dropping them: a test binary keeps one
/// in a static, and statics are never dropped.
fn remove_dead_runs_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(REAL_API_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

impl Drop for RealApi {
    fn drop(&mut self) {
        self.apiserver.kill();
        self.etcd.peer.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Server-side apply of `object` (without its status), then its status.
async fn apply_one(
    api: Api<DynamicObject>,
    name: String,
    mut object: Value,
) -> Result<(), PeerError> {
    let doing = format!("applying {} {name}", object["kind"]);
    let params = PatchParams::apply("kubewire-test").force();
    let status = object.as_object_mut().and_then(|o| o.remove("status"));
    api.patch(&name, &params, &Patch::Apply(&object))
        .await
        .map_err(|source| PeerError::Api {
            doing: doing.clone(),
            source,
        })?;
    if let Some(status) = status {
        let patch = json!({"status": status});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|source| PeerError::Api {
                doing: format!("{doing} (status)"),
                source,
            })?;
    }
    Ok(())
}

/// The resource name of a kind: lowercase, plural.
fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    match lower.as_str() {
        "endpoints" => lower,
        _ if lower.ends_with('s') => format!("{lower}es"),
        _ if lower.ends_with('y') => format!("{}ies", &lower[..lower.len() - 1]),
        _ => format!("{lower}s"),
    }
}

fn http_get(path: &str) -> hyper::Request<Vec<u8>> {
    let mut request = hyper::Request::new(Vec::new());
    *request.uri_mut() = path.parse().unwrap_or_default();
    request
}

/// A kubeconfig for `addr`, trusting the CA in `ca_file`, with a bearer
/// token.
fn kubeconfig_text(addr: &SocketAddr, ca_file: &Path, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: real\n  cluster:\n    server: https://{addr}\n    certificate-authority: {}\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: real\n  context:\n    cluster: real\n    user: user\ncurrent-context: real\n",
        ca_file.display()
    )
}

async fn client_from(kubeconfig: &str) -> Result<kube::Client, String> {
    let config = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| e.to_string())?;
    let config = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// One [`RealApi`] for a whole test binary, started on first use from a
/// thread that lives as long as the process (its peers die with that
/// thread: see [`spawn_with_death_signal`]). Its tests share it, each in
/// namespaces of its own; a test that kills or restarts a peer starts its
/// own [`RealApi`] instead.
pub fn shared_real_api() -> &'static Result<RealApi, PeerError> {
    static SHARED: OnceLock<Result<RealApi, PeerError>> = OnceLock::new();
    SHARED.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        let started = std::thread::Builder::new()
            .name("real-api".into())
            .spawn(move || {
                let _ = tx.send(RealApi::start());
                loop {
                    std::thread::park();
                }
            });
        match started {
            Ok(_) => rx.recv().unwrap_or_else(|_| {
                Err(PeerError::Failed {
                    peer: "kube-apiserver",
                    doing: "starting the shared API server".into(),
                    why: "its thread ended".into(),
                    log_tail: String::new(),
                })
            }),
            Err(e) => Err(PeerError::Failed {
                peer: "kube-apiserver",
                doing: "starting the shared API server's thread".into(),
                why: e.to_string(),
                log_tail: String::new(),
            }),
        }
    })
}
