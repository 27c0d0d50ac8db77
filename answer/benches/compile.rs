//! Compiler benchmarks (a plain harness: each figure is one large run).
//!
//! Run: `cargo bench -p kubewire-answer --bench compile`
//!
//! 1. Full compile of 10k services, 100k endpoints and 100k pods.
//! 2. One endpoint flipping ready in a 1000-endpoint headless service, to delta.
//! 3. Memory of the compiled table at that size, per name.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    unsafe_code
)]

use kubewire_answer::model::{
    EndpointModel, EndpointNames, PodModel, PortModel, ServiceKind, ServiceModel, SliceModel,
};
use kubewire_answer::{
    AnswerTable, Compiler, Object, ObjectChange, ObjectKey, PodMode, Settings, Update,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, counting bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds GlobalAlloc\'s contract, passed on as is.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller upholds GlobalAlloc\'s contract, passed on as is.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | n))
}

/// 10k services in 100 namespaces (one in five headless), two named ports
/// each, ten endpoints per service (100k), and 100k running pods.
fn cluster(services: u32, endpoints_per_service: u32, pods: u32) -> Vec<Object> {
    let mut objects = Vec::new();
    let ports = vec![
        PortModel {
            name: "http".into(),
            protocol: "tcp".into(),
            port: 80,
        },
        PortModel {
            name: "grpc".into(),
            protocol: "tcp".into(),
            port: 9090,
        },
    ];
    for ns in 0..100 {
        objects.push(Object::Namespace(format!("ns-{ns}")));
    }
    let mut next_ip = 1u32 << 20;
    for s in 0..services {
        let namespace = format!("ns-{}", s % 100);
        let name = format!("svc-{s}");
        let kind = if s % 5 == 0 {
            ServiceKind::Headless
        } else {
            ServiceKind::ClusterIp(vec![ip(s + 1)])
        };
        objects.push(Object::Service(ServiceModel {
            stamp: Default::default(),
            key: ObjectKey::new(namespace.clone(), name.clone()),
            kind,
            ports: ports.clone().into(),
            publish_not_ready_addresses: false,
            external: None,
        }));
        let endpoints = (0..endpoints_per_service)
            .map(|e| {
                next_ip += 1;
                EndpointModel {
                    addresses: vec![ip(next_ip)].into(),
                    ready: true,
                    names: EndpointNames::boxed(
                        (s % 5 == 0).then(|| format!("{name}-{e}").into()),
                        Some(format!("{name}-{e}").into()),
                    ),
                    zone: None,
                }
            })
            .collect();
        objects.push(Object::Slice(SliceModel {
            stamp: Default::default(),
            key: ObjectKey::new(namespace, format!("{name}-slice")),
            service: Some(name),
            ports: ports.clone().into(),
            endpoints,
            zones: Box::default(),
            import: None,
        }));
    }
    for p in 0..pods {
        objects.push(Object::Pod(PodModel {
            key: ObjectKey::new(format!("ns-{}", p % 100), format!("pod-{p}")),
            ips: vec![ip((2 << 20) + p)],
            phase: "Running".into(),
            host_network: false,
        }));
    }
    objects
}

fn full_compile(mode: PodMode) {
    // The machine is noisy: three runs, reported as min and median.
    let mut times: Vec<f64> = (0..2).map(|_| compile_once(mode).0).collect();
    let (last, compiler_bytes, compiler, delta) = compile_once(mode);
    times.push(last);
    times.sort_by(f64::total_cmp);
    report(mode, &times, compiler_bytes, &compiler, delta);
}

fn compile_once(mode: PodMode) -> (f64, isize, Compiler, kubewire_answer::Delta) {
    let objects = cluster(10_000, 10, 100_000);
    let before = live();
    let start = Instant::now();
    let mut compiler = Compiler::new(Settings {
        pod_mode: mode,
        ..Settings::default()
    });
    let namespaces = objects
        .iter()
        .filter(|o| matches!(o, Object::Namespace(_)))
        .cloned()
        .collect();
    for change in ObjectChange::relist(kubewire_answer::Kind::Namespace, namespaces) {
        compiler.apply(change);
    }
    for object in objects
        .iter()
        .filter(|o| !matches!(o, Object::Namespace(_)))
    {
        compiler.apply(ObjectChange::Upsert(object.clone()));
    }
    compiler.mark_synced();
    let delta = compiler.take_delta().unwrap();
    let elapsed = start.elapsed().as_secs_f64() * 1000.0;
    let compiler_bytes = live() - before;
    drop(objects);
    (elapsed, compiler_bytes, compiler, delta)
}

fn report(
    mode: PodMode,
    times: &[f64],
    compiler_bytes: isize,
    compiler: &Compiler,
    delta: kubewire_answer::Delta,
) {
    let names = compiler.name_count();
    let entry_bytes: usize = compiler.entries().map(|e| e.heap_bytes()).sum();
    let mut table = AnswerTable::new();
    table.apply(&Update::Delta(Arc::new(delta)));
    let table_bytes = table.table_bytes();
    println!(
        "full compile, pods {mode}: 10k services, 100k endpoints, 100k pods -> {names} names in {:.0} ms (min of 3; median {:.0} ms)",
        times[0], times[1]
    );
    println!(
        "  compiled entries: {:.1} MiB ({:.0} bytes/name); per-core hash table: {:.1} MiB ({:.0} bytes/name); \
         compiler total incl. model and index: {:.1} MiB",
        entry_bytes as f64 / 1048576.0,
        entry_bytes as f64 / names as f64,
        table_bytes as f64 / 1048576.0,
        table_bytes as f64 / names as f64,
        compiler_bytes as f64 / 1048576.0,
    );
}

fn endpoint_flip() {
    let mut compiler = Compiler::new(Settings::default());
    let endpoints: Vec<EndpointModel> = (0..1000u32)
        .map(|e| EndpointModel {
            addresses: vec![ip(e + 100)].into(),
            ready: true,
            names: None,
            zone: None,
        })
        .collect();
    let key = ObjectKey::new("default", "big");
    compiler.apply(ObjectChange::Upsert(Object::Service(ServiceModel {
        stamp: Default::default(),
        key: key.clone(),
        kind: ServiceKind::Headless,
        ports: vec![PortModel {
            name: "http".into(),
            protocol: "tcp".into(),
            port: 80,
        }]
        .into(),
        publish_not_ready_addresses: false,
        external: None,
    })));
    // Kubernetes puts at most 100 endpoints in a slice: ten slices.
    let mut slices: Vec<SliceModel> = endpoints
        .chunks(100)
        .enumerate()
        .map(|(i, chunk)| SliceModel {
            stamp: Default::default(),
            key: ObjectKey::new("default", format!("big-{i}")),
            service: Some("big".into()),
            ports: vec![PortModel {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80,
            }]
            .into(),
            endpoints: chunk.to_vec(),
            zones: Box::default(),
            import: None,
        })
        .collect();
    for slice in &slices {
        compiler.apply(ObjectChange::Upsert(Object::Slice(slice.clone())));
    }
    compiler.take_delta();
    let mut times = Vec::new();
    let mut changes = Vec::new();
    for round in 0..200 {
        let slice = &mut slices[round % 10];
        let i = (round / 10) % 100;
        slice.endpoints[i].ready = !slice.endpoints[i].ready;
        let slice = slice.clone();
        let start = Instant::now();
        compiler.apply(ObjectChange::Upsert(Object::Slice(slice)));
        let delta = compiler.take_delta().unwrap();
        times.push(start.elapsed());
        changes.push(delta.changes.len());
    }
    times.sort();
    println!(
        "endpoint flip in a 1000-endpoint headless service (10 slices): p50 {:.2} ms, p99 {:.2} ms, {}-{} names changed per delta",
        times[times.len() / 2].as_secs_f64() * 1000.0,
        times[times.len() * 99 / 100].as_secs_f64() * 1000.0,
        changes.iter().min().unwrap(),
        changes.iter().max().unwrap(),
    );
}

/// What `kubewire-bench propagation`'s "compiled" stage costs: one
/// endpoint's readiness flipped in a ClusterIP service of ten, in a cluster
/// of 10k services (100k endpoints), then the delta taken.
fn endpoint_flip_in_a_big_cluster() {
    let objects = cluster(10_000, 10, 0);
    let mut compiler = Compiler::new(Settings::default());
    for object in &objects {
        compiler.apply(ObjectChange::Upsert(object.clone()));
    }
    compiler.mark_synced();
    compiler.take_delta();
    // Services 1, 2, 3, 4, 6 … are ClusterIP (every fifth is headless).
    let mut slices: Vec<SliceModel> = objects
        .into_iter()
        .filter_map(|o| match o {
            Object::Slice(slice) if slice.key.name.ends_with("1-slice") => Some(slice),
            _ => None,
        })
        .take(100)
        .collect();
    let mut times = Vec::new();
    for round in 0..2000 {
        let slice = &mut slices[round % 100];
        let endpoint = &mut slice.endpoints[(round / 100) % 10];
        endpoint.ready = !endpoint.ready;
        let slice = slice.clone();
        let start = Instant::now();
        compiler.apply(ObjectChange::Upsert(Object::Slice(slice)));
        let delta = compiler.take_delta();
        times.push(start.elapsed());
        drop(delta);
    }
    times.sort();
    println!(
        "endpoint flip in a 10-endpoint ClusterIP service of 10k: p50 {:.1} µs, p99 {:.1} µs",
        times[times.len() / 2].as_secs_f64() * 1e6,
        times[times.len() * 99 / 100].as_secs_f64() * 1e6,
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` must not run this.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    full_compile(PodMode::Insecure);
    full_compile(PodMode::Verified);
    endpoint_flip();
    endpoint_flip_in_a_big_cluster();
}
