//! Finding the cluster: `--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`, or
//! the in-cluster service account. Nothing found is an error that lists what
//! was tried; kubewire never falls back to demo data.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::path::Path;

/// How the cluster was found, for the startup log.
#[derive(Clone, Debug)]
pub struct Found {
    /// The client configuration.
    pub config: Config,
    /// Where it came from.
    pub origin: String,
}

/// Why no cluster could be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// `--kubeconfig` was given but cannot be used.
    #[error(
        "--kubeconfig {path} cannot be used (fix the file or point --kubeconfig at a working one)"
    )]
    BadKubeconfig {
        /// The path given.
        path: String,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Nothing was found.
    #[error(
        "no Kubernetes cluster found. Tried: {tried}. Run inside a pod with a service account, pass \
         --kubeconfig PATH (or set KUBECONFIG), or serve files with --manifests PATH (--demo for the sample cluster)"
    )]
    NotFound {
        /// Everything tried, with why each failed.
        tried: String,
    },
}

/// Finds the cluster's client configuration, without contacting it.
pub async fn find(kubeconfig: Option<&Path>) -> Result<Found, ClusterError> {
    if let Some(path) = kubeconfig {
        let bad = |source: kube::config::KubeconfigError| ClusterError::BadKubeconfig {
            path: path.display().to_string(),
            source: Box::new(source),
        };
        let file = Kubeconfig::read_from(path).map_err(bad)?;
        let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .map_err(bad)?;
        return Ok(Found {
            config,
            origin: format!("kubeconfig {}", path.display()),
        });
    }
    let mut tried = Vec::new();
    match std::env::var_os("KUBECONFIG") {
        Some(value) => tried.push(format!("$KUBECONFIG={}", value.to_string_lossy())),
        None => tried.push("$KUBECONFIG (unset)".into()),
    }
    match Config::from_kubeconfig(&KubeConfigOptions::default()).await {
        Ok(config) => {
            let origin = match std::env::var_os("KUBECONFIG") {
                Some(value) => format!("kubeconfig {}", value.to_string_lossy()),
                None => "kubeconfig ~/.kube/config".into(),
            };
            return Ok(Found { config, origin });
        }
        Err(error) => tried.push(format!("~/.kube/config or $KUBECONFIG ({error})")),
    }
    match Config::incluster() {
        Ok(config) => {
            return Ok(Found {
                config,
                origin: "in-cluster service account".into(),
            });
        }
        Err(error) => tried.push(format!("in-cluster service account ({error})")),
    }
    Err(ClusterError::NotFound {
        tried: tried.join("; "),
    })
}

/// Builds a client. Must run inside the tokio runtime that will use it.
/// A plain `http://` API (kubectl proxy, test servers) is reached without
/// any TLS machinery.
pub fn client(config: Config) -> Result<Client, kube::Error> {
    if config.cluster_url.scheme_str() == Some("http") {
        use kube::client::ConfigExt;
        let connector =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        // kube's auth layer re-reads a token file when it rotates.
        let auth = config.auth_layer()?;
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(auth)
            .map_err(tower::BoxError::from)
            .service(connector);
        return Ok(Client::new(service, config.default_namespace));
    }
    Client::try_from(config)
}
