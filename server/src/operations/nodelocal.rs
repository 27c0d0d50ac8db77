//! Node-local mode's host networking, as NodeLocal DNSCache's `node-cache`
//! does it: a dummy interface that holds the node-local addresses, and
//! rules in the raw table that keep DNS to and from them out of conntrack
//! (conntrack races and full tables are what make pods' lookups time out
//! after 5 s).
//!
//! Everything here is idempotent: [`NodeNetwork::ensure`] creates what is
//! missing and repairs what drifted, so a start after an OOM kill adopts
//! what the last instance left, and the periodic check repairs what someone
//! removed. [`NodeNetwork::teardown`] removes both.

use crate::operations::config::{self, InterfaceKind, Notrack};
use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkFlags;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// The nftables table kubewire owns; nothing else is ever touched.
pub const NFT_TABLE: &str = "kubewire-nodelocal";
/// The comment on every iptables rule kubewire adds.
const IPTABLES_COMMENT: &str = "kubewire node-local: skip conntrack";

/// What setting up the node's networking can fail at. The `errortype`
/// label of `coredns_nodecache_setup_errors_total` comes from here.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// No `CAP_NET_ADMIN`.
    #[error(
        "{what} needs CAP_NET_ADMIN: add NET_ADMIN to the container's securityContext.capabilities (or run as root on the host)"
    )]
    NoNetAdmin {
        /// What was tried.
        what: String,
    },
    /// The kernel cannot make dummy interfaces.
    #[error(
        "the kernel cannot create dummy interface {name:?}; load the dummy module (modprobe dummy), or set node_local.interface_kind = \"bridge\""
    )]
    NoDummy {
        /// The interface.
        name: String,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Any other netlink failure.
    #[error("interface {name:?}: {what}")]
    Netlink {
        /// The interface.
        name: String,
        /// What was tried.
        what: &'static str,
        /// What the kernel said.
        #[source]
        source: std::io::Error,
    },
    /// Neither `nft` nor `iptables` works here.
    #[error(
        "node_local.notrack = \"{mode}\", but {missing}; install nftables or iptables in the image, or set node_local.notrack = \"off\""
    )]
    NoRuleTool {
        /// The configured mode.
        mode: &'static str,
        /// What is missing.
        missing: String,
    },
    /// `nft` or `iptables` failed.
    #[error("{command} failed: {output}")]
    Rules {
        /// The command line.
        command: String,
        /// Its standard error, or why it could not run.
        output: String,
    },
}

impl SetupError {
    /// The `errortype` label, as node-cache names it (nftables failures
    /// count as `iptables`, so existing dashboards see them).
    pub fn errortype(&self, adding: bool) -> &'static str {
        match self {
            SetupError::NoRuleTool { .. } | SetupError::Rules { .. } => "iptables",
            _ if adding => "interface_add",
            _ => "interface_check",
        }
    }
}

fn netlink_io(error: &rtnetlink::Error) -> Option<std::io::Error> {
    match error {
        rtnetlink::Error::NetlinkError(message) => Some(message.to_io()),
        _ => None,
    }
}

fn netlink_error(name: &str, what: &'static str, error: rtnetlink::Error) -> SetupError {
    let io = netlink_io(&error).unwrap_or_else(|| std::io::Error::other(error.to_string()));
    if io.raw_os_error() == Some(libc::EPERM) {
        return SetupError::NoNetAdmin {
            what: format!("{what} on interface {name:?}"),
        };
    }
    SetupError::Netlink {
        name: name.to_string(),
        what,
        source: io,
    }
}

/// The tool that manages the rules, once chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleTool {
    /// `nft`, with a table of kubewire's own.
    Nftables,
    /// `iptables` and `ip6tables`, in the raw table.
    Iptables,
}

/// What a check found and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Repaired {
    /// The interface was created, raised, or given a missing address.
    pub interface: bool,
    /// The rules were installed again.
    pub rules: bool,
}

/// The node's networking for node-local mode.
#[derive(Debug, Clone)]
pub struct NodeNetwork {
    interface: String,
    kind: InterfaceKind,
    addresses: Vec<IpAddr>,
    ports: Vec<u16>,
    rules: Option<RuleTool>,
}

impl NodeNetwork {
    /// From the configuration; chooses the rule tool (`auto` tries `nft`
    /// first). `None` when node-local mode is off.
    pub fn from_config(config: &config::Config) -> Result<Option<NodeNetwork>, SetupError> {
        let n = &config.node_local;
        if !n.enabled {
            return Ok(None);
        }
        let mut ports: Vec<u16> = config
            .dns
            .listen
            .iter()
            .filter(|l| n.addresses.contains(&l.ip()) || l.ip().is_unspecified())
            .map(|l| l.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        let rules = match n.notrack {
            Notrack::Off => None,
            Notrack::Nftables => Some(require(RuleTool::Nftables, "nftables")?),
            Notrack::Iptables => Some(require(RuleTool::Iptables, "iptables")?),
            Notrack::Auto => Some(match probe(RuleTool::Nftables) {
                Ok(()) => RuleTool::Nftables,
                Err(error @ SetupError::NoNetAdmin { .. }) => return Err(error),
                Err(_) => require(RuleTool::Iptables, "auto")?,
            }),
        };
        Ok(Some(NodeNetwork {
            interface: n.interface.clone(),
            kind: n.interface_kind,
            addresses: n.addresses.clone(),
            ports,
            rules,
        }))
    }

    /// The interface's name.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The rule tool in use, if any.
    pub fn rule_tool(&self) -> Option<RuleTool> {
        self.rules
    }

    /// Creates or repairs the interface, then the rules.
    pub async fn ensure(&self) -> Result<Repaired, SetupError> {
        let interface = self.ensure_interface().await?;
        let rules = match self.rules {
            Some(tool) => {
                let this = self.clone();
                tokio::task::spawn_blocking(move || this.ensure_rules(tool))
                    .await
                    .map_err(|e| SetupError::Rules {
                        command: "the rule check".into(),
                        output: e.to_string(),
                    })??
            }
            None => false,
        };
        Ok(Repaired { interface, rules })
    }

    /// Removes the rules and the interface; what is already gone is fine.
    pub async fn teardown(&self) -> Result<(), SetupError> {
        if let Some(tool) = self.rules {
            let this = self.clone();
            tokio::task::spawn_blocking(move || this.remove_rules(tool))
                .await
                .map_err(|e| SetupError::Rules {
                    command: "the rule removal".into(),
                    output: e.to_string(),
                })??;
        }
        let handle = connect(&self.interface)?;
        if let Some(link) = find_link(&handle, &self.interface).await? {
            handle
                .link()
                .del(link.header.index)
                .execute()
                .await
                .map_err(|e| netlink_error(&self.interface, "deleting it", e))?;
        }
        Ok(())
    }

    async fn ensure_interface(&self) -> Result<bool, SetupError> {
        let name = self.interface.as_str();
        let handle = connect(name)?;
        let mut repaired = false;
        let link = match find_link(&handle, name).await? {
            Some(link) => link,
            None => {
                let message = match self.kind {
                    InterfaceKind::Dummy => rtnetlink::LinkDummy::new(name).up().build(),
                    InterfaceKind::Bridge => rtnetlink::LinkBridge::new(name).up().build(),
                };
                let add = handle.link().add(message).execute().await;
                if let Err(error) = add {
                    let io = netlink_io(&error);
                    if self.kind == InterfaceKind::Dummy
                        && let Some(io) = io
                        && matches!(io.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENODEV))
                    {
                        return Err(SetupError::NoDummy {
                            name: name.to_string(),
                            source: io,
                        });
                    }
                    return Err(netlink_error(name, "creating it", error));
                }
                repaired = true;
                find_link(&handle, name)
                    .await?
                    .ok_or_else(|| SetupError::Netlink {
                        name: name.to_string(),
                        what: "finding it after creating it",
                        source: std::io::Error::from_raw_os_error(libc::ENODEV),
                    })?
            }
        };
        let index = link.header.index;
        if !link.header.flags.contains(LinkFlags::Up) {
            handle
                .link()
                .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
                .execute()
                .await
                .map_err(|e| netlink_error(name, "bringing it up", e))?;
            repaired = true;
        }
        let present: Vec<IpAddr> = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .map_ok(|message| {
                message.attributes.into_iter().filter_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(ip),
                    _ => None,
                })
            })
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| netlink_error(name, "listing its addresses", e))?
            .into_iter()
            .flatten()
            .collect();
        for &address in &self.addresses {
            if present.contains(&address) {
                continue;
            }
            let prefix = if address.is_ipv4() { 32 } else { 128 };
            handle
                .address()
                .add(index, address, prefix)
                .execute()
                .await
                .map_err(|e| netlink_error(name, "adding an address", e))?;
            repaired = true;
        }
        Ok(repaired)
    }

    /// The nftables ruleset: one table of kubewire's own, replaced whole.
    pub fn nft_ruleset(&self) -> String {
        let mut prerouting = Vec::new();
        let mut output = Vec::new();
        for family in ["ip", "ip6"] {
            let addresses: Vec<String> = self
                .addresses
                .iter()
                .filter(|a| a.is_ipv4() == (family == "ip"))
                .map(ToString::to_string)
                .collect();
            if addresses.is_empty() {
                continue;
            }
            let set = format!("{{ {} }}", addresses.join(", "));
            let ports = self
                .ports
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            for proto in ["udp", "tcp"] {
                // Queries arriving, and replies and local clients' queries.
                prerouting.push(format!(
                    "{family} daddr {set} {proto} dport {{ {ports} }} notrack"
                ));
                output.push(format!(
                    "{family} saddr {set} {proto} sport {{ {ports} }} notrack"
                ));
                output.push(format!(
                    "{family} daddr {set} {proto} dport {{ {ports} }} notrack"
                ));
            }
        }
        let chain = |name: &str, hook: &str, rules: &[String]| {
            let mut text = format!(
                "  chain {name} {{\n    type filter hook {hook} priority raw; policy accept;\n"
            );
            for rule in rules {
                text.push_str("    ");
                text.push_str(rule);
                text.push('\n');
            }
            text.push_str("  }\n");
            text
        };
        format!(
            "table inet {NFT_TABLE} {{\n{}{}}}\n",
            chain("prerouting", "prerouting", &prerouting),
            chain("output", "output", &output)
        )
    }

    fn nft_rule_count(&self) -> usize {
        self.nft_ruleset().matches("notrack").count()
    }

    /// The iptables rules: (command, chain, match arguments).
    pub fn iptables_rules(&self) -> Vec<(&'static str, &'static str, Vec<String>)> {
        let mut rules = Vec::new();
        for address in &self.addresses {
            let command = if address.is_ipv4() {
                "iptables"
            } else {
                "ip6tables"
            };
            let address = address.to_string();
            for &port in &self.ports {
                let port = port.to_string();
                for proto in ["udp", "tcp"] {
                    let rule = |chain, side: &str, port_side: &str| {
                        (
                            command,
                            chain,
                            vec![
                                "-p".to_string(),
                                proto.to_string(),
                                side.to_string(),
                                address.clone(),
                                port_side.to_string(),
                                port.clone(),
                                "-m".into(),
                                "comment".into(),
                                "--comment".into(),
                                IPTABLES_COMMENT.into(),
                                "-j".into(),
                                "NOTRACK".into(),
                            ],
                        )
                    };
                    rules.push(rule("PREROUTING", "-d", "--dport"));
                    rules.push(rule("OUTPUT", "-s", "--sport"));
                    rules.push(rule("OUTPUT", "-d", "--dport"));
                }
            }
        }
        rules
    }

    fn ensure_rules(&self, tool: RuleTool) -> Result<bool, SetupError> {
        match tool {
            RuleTool::Nftables => {
                let listed = run("nft", &["list", "table", "inet", NFT_TABLE], None);
                if let Ok(text) = &listed
                    && text.matches("notrack").count() == self.nft_rule_count()
                {
                    return Ok(false);
                }
                // Declaring the table first makes the delete succeed when it
                // is absent; the three lines apply as one transaction.
                let script = format!(
                    "table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n{}",
                    self.nft_ruleset()
                );
                run("nft", &["-f", "-"], Some(&script))?;
                Ok(true)
            }
            RuleTool::Iptables => {
                let mut added = false;
                for (command, chain, rule) in self.iptables_rules() {
                    let mut check = vec!["-w", "5", "-t", "raw", "-C", chain];
                    check.extend(rule.iter().map(String::as_str));
                    if run(command, &check, None).is_ok() {
                        continue;
                    }
                    let mut append = vec!["-w", "5", "-t", "raw", "-A", chain];
                    append.extend(rule.iter().map(String::as_str));
                    run(command, &append, None)?;
                    added = true;
                }
                Ok(added)
            }
        }
    }

    fn remove_rules(&self, tool: RuleTool) -> Result<(), SetupError> {
        match tool {
            RuleTool::Nftables => {
                if run("nft", &["list", "table", "inet", NFT_TABLE], None).is_ok() {
                    run("nft", &["delete", "table", "inet", NFT_TABLE], None)?;
                }
            }
            RuleTool::Iptables => {
                for (command, chain, rule) in self.iptables_rules() {
                    let mut delete = vec!["-w", "5", "-t", "raw", "-D", chain];
                    delete.extend(rule.iter().map(String::as_str));
                    // Delete every copy (an OOM-killed instance may have added one more).
                    while run(command, &delete, None).is_ok() {}
                }
            }
        }
        Ok(())
    }
}

fn connect(name: &str) -> Result<rtnetlink::Handle, SetupError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            SetupError::NoNetAdmin {
                what: "opening a netlink socket".into(),
            }
        } else {
            SetupError::Netlink {
                name: name.to_string(),
                what: "opening a netlink socket",
                source,
            }
        }
    })?;
    tokio::spawn(connection);
    Ok(handle)
}

async fn find_link(
    handle: &rtnetlink::Handle,
    name: &str,
) -> Result<Option<rtnetlink::packet_route::link::LinkMessage>, SetupError> {
    match handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(link) => Ok(link),
        Err(error) if netlink_io(&error).and_then(|e| e.raw_os_error()) == Some(libc::ENODEV) => {
            Ok(None)
        }
        Err(error) => Err(netlink_error(name, "looking it up", error)),
    }
}

fn require(tool: RuleTool, mode: &'static str) -> Result<RuleTool, SetupError> {
    match probe(tool) {
        Ok(()) => return Ok(tool),
        Err(error @ SetupError::NoNetAdmin { .. }) => return Err(error),
        Err(_) => {}
    }
    let missing = match tool {
        _ if mode == "auto" => {
            "neither `nft list tables` nor `iptables -t raw -S` works here (no binary on PATH, or no kernel support)"
        }
        RuleTool::Nftables => {
            "`nft list tables` does not work here (no nft binary on PATH, or no nf_tables in the kernel)"
        }
        RuleTool::Iptables => {
            "`iptables -t raw -S` does not work here (no iptables binary on PATH, or no raw table in the kernel)"
        }
    };
    Err(SetupError::NoRuleTool {
        mode,
        missing: missing.to_string(),
    })
}

/// Whether the tool works here; a missing capability is its own error.
fn probe(tool: RuleTool) -> Result<(), SetupError> {
    match tool {
        RuleTool::Nftables => run("nft", &["list", "tables"], None).map(drop),
        RuleTool::Iptables => run("iptables", &["-w", "5", "-t", "raw", "-S"], None).map(drop),
    }
}

/// Runs a command; its standard output, or an error with its standard error.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SetupError> {
    let command = format!("{program} {}", args.join(" "));
    let failed = |output: String| SetupError::Rules {
        command: command.clone(),
        output,
    };
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run it: {e}")))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| failed(format!("writing its input: {e}")))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| failed(format!("waiting for it: {e}")))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if stderr.contains("Operation not permitted") || stderr.contains("Permission denied") {
        return Err(SetupError::NoNetAdmin {
            what: format!("`{command}` ({stderr})"),
        });
    }
    Err(failed(format!("{} {stderr}", output.status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network(addresses: &[&str]) -> NodeNetwork {
        NodeNetwork {
            interface: "nodelocaldns".into(),
            kind: InterfaceKind::Dummy,
            addresses: addresses.iter().map(|a| a.parse().unwrap()).collect(),
            ports: vec![53],
            rules: None,
        }
    }

    #[test]
    fn the_nft_ruleset_skips_conntrack_both_ways_for_each_family() {
        let ruleset = network(&["169.254.20.10", "10.96.0.10", "fd00::a"]).nft_ruleset();
        assert!(
            ruleset.contains("ip daddr { 169.254.20.10, 10.96.0.10 } udp dport { 53 } notrack")
        );
        assert!(ruleset.contains("ip6 saddr { fd00::a } tcp sport { 53 } notrack"));
        assert!(ruleset.contains("type filter hook prerouting priority raw"));
        // Two families × two protocols × three directions.
        assert_eq!(ruleset.matches("notrack").count(), 12);
    }

    #[test]
    fn iptables_rules_use_ip6tables_for_ipv6() {
        let rules = network(&["169.254.20.10", "fd00::a"]).iptables_rules();
        assert_eq!(rules.len(), 12);
        assert!(rules.iter().any(|(c, chain, r)| *c == "ip6tables"
            && *chain == "PREROUTING"
            && r.contains(&"fd00::a".to_string())));
    }

    #[test]
    fn errortypes_are_node_caches() {
        let rules = SetupError::Rules {
            command: "nft".into(),
            output: String::new(),
        };
        assert_eq!(rules.errortype(true), "iptables");
        let perm = SetupError::NoNetAdmin { what: "x".into() };
        assert_eq!(perm.errortype(true), "interface_add");
        assert_eq!(perm.errortype(false), "interface_check");
    }
}
