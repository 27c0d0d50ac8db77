//! One core's resolver: the single way in for every query the answer table
//! cannot finish alone, over UDP and TCP alike.
//!
//! It owns the core's forwarder, its part of the cache, autopath's plan and
//! the count of queries in progress. [`Resolver::resolve`] takes a query
//! parsed once at the socket ([`QueryBuf`]) and what is left to do
//! ([`Work`]), and returns the client's reply. Forwarded names, ExternalName
//! targets outside the cluster and autopath's candidates all go through
//! [`Resolver::forward`]: the cache when there is one, the upstreams
//! otherwise.

use super::autopath::{self, AutopathPlan, Candidate};
use super::cache::{self, CoreCache};
use super::forward::{Forwarded, Forwarder};
use super::probe::LoopProbes;
use super::udp_pool::Readiness;
use crate::operations::metrics::Plugin;
use kubewire_answer::AnswerTable;
use kubewire_wire::{Query, QueryBuf, Rcode, Transport};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

/// What is left to do for a query the table could not finish.
#[derive(Debug)]
pub enum Work {
    /// Forward it.
    Forward,
    /// Chase the CNAME in the table's reply (an ExternalName Service).
    Chase(Vec<u8>),
    /// Walk a pod's search list after the table's NXDOMAIN (this reply)
    /// for its first candidate.
    Autopath(Vec<u8>, Box<Candidate>),
}

/// The client's reply, and what made it.
#[derive(Debug)]
pub struct Resolved {
    /// The reply, ready to send (no TCP length prefix).
    pub reply: Vec<u8>,
    /// Its RCODE.
    pub rcode: Rcode,
    /// The plugin CoreDNS would name for it.
    pub plugin: Plugin,
}

/// Counts a query in progress while its task lives.
#[derive(Debug)]
pub struct Background(Rc<Cell<usize>>);

impl Background {
    /// Counts one more until dropped.
    pub fn start(count: &Rc<Cell<usize>>) -> Background {
        count.set(count.get() + 1);
        Background(Rc::clone(count))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// One core's resolver. See the module docs.
#[derive(Debug)]
pub struct Resolver {
    table: Rc<RefCell<AnswerTable>>,
    forwarder: Option<Rc<Forwarder>>,
    cache: Option<Rc<RefCell<CoreCache>>>,
    autopath: Option<Arc<AutopathPlan>>,
    /// Queries in progress on this core's reactor.
    in_progress: Rc<Cell<usize>>,
    /// The kept upstream sockets, for the serving loop's `poll`.
    readiness: Rc<Readiness>,
}

impl Resolver {
    /// A resolver over the core's `table`; `readiness` is the one the
    /// forwarder's sockets were made with.
    pub fn new(
        table: Rc<RefCell<AnswerTable>>,
        forwarder: Option<Forwarder>,
        cache: Option<CoreCache>,
        autopath: Option<Arc<AutopathPlan>>,
        readiness: Rc<Readiness>,
    ) -> Resolver {
        Resolver {
            readiness,
            table,
            forwarder: forwarder.map(Rc::new),
            cache: cache.map(|c| Rc::new(RefCell::new(c))),
            autopath,
            in_progress: Rc::new(Cell::new(0)),
        }
    }

    /// The forwarder, when names are forwarded.
    pub fn forwarder(&self) -> Option<&Forwarder> {
        self.forwarder.as_deref()
    }

    /// The cache, when forwarded answers are cached.
    pub fn cache(&self) -> Option<&RefCell<CoreCache>> {
        self.cache.as_deref()
    }

    /// Autopath's plan, when autopath is on.
    pub fn autopath(&self) -> Option<&AutopathPlan> {
        self.autopath.as_deref()
    }

    /// Queries in progress: while any is, the core waits on its reactor,
    /// which reaps their upstream replies.
    pub fn in_progress(&self) -> usize {
        self.in_progress.get()
    }

    /// The kept upstream sockets, for the serving loop.
    pub fn readiness(&self) -> &Rc<Readiness> {
        &self.readiness
    }

    /// Counts a query in progress until the guard drops.
    pub fn start(&self) -> Background {
        Background::start(&self.in_progress)
    }

    /// Starts the background tasks: the upstreams' health checks.
    pub fn start_tasks(&self) {
        if let Some(forwarder) = &self.forwarder {
            glommio::spawn_local(Rc::clone(forwarder).health_checks()).detach();
        }
    }

    /// Handles the cache's messages from other cores: called when woken.
    pub fn drain(&self) {
        if let (Some(cache), Some(forwarder)) = (&self.cache, &self.forwarder) {
            CoreCache::drain(cache, forwarder, &self.in_progress);
        }
    }

    /// The client's reply to `query`, after `work`. `None` when there is
    /// nothing to send.
    pub async fn resolve(
        self: &Rc<Self>,
        query: &QueryBuf,
        work: Work,
        transport: Transport,
    ) -> Option<Resolved> {
        let query = query.query();
        match work {
            Work::Forward => {
                let forwarded = self.forward(&query, transport).await?;
                Some(Resolved {
                    reply: forwarded.reply,
                    rcode: forwarded.rcode,
                    plugin: Plugin::Forward,
                })
            }
            Work::Chase(table_reply) => {
                let (reply, rcode) =
                    super::chase::chase(self, &query, table_reply, transport).await;
                Some(Resolved {
                    reply,
                    rcode,
                    plugin: Plugin::Kubernetes,
                })
            }
            Work::Autopath(nxdomain, candidate) => {
                let plan = self.autopath.as_deref()?;
                let completed =
                    autopath::complete(self, plan, &candidate, &query, nxdomain, transport).await;
                Some(Resolved {
                    reply: completed.reply,
                    rcode: completed.rcode,
                    plugin: if completed.found {
                        Plugin::Autopath
                    } else {
                        Plugin::Kubernetes
                    },
                })
            }
        }
    }

    /// Forwards `query`: through the cache when there is one, so that the
    /// node asks upstream once per name. Loop probes bypass it, as its
    /// coalescing would hide a loop. `None` when nothing forwards.
    pub async fn forward(
        self: &Rc<Self>,
        query: &Query<'_>,
        transport: Transport,
    ) -> Option<Forwarded> {
        let forwarder = self.forwarder.as_ref()?;
        match &self.cache {
            Some(cache) if !LoopProbes::is_probe(query.key()) => {
                cache::resolve(cache, forwarder, query, transport).await
            }
            _ => forwarder.forward(query, transport).await,
        }
    }

    /// The core's answer table.
    pub fn table(&self) -> &RefCell<AnswerTable> {
        &self.table
    }
}
