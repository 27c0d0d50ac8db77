//! The metrics' tests: counts summed across cores, and names and labels as
//! CoreDNS writes them.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

#[test]
fn counts_are_summed_across_cores_at_scrape() {
    let a = Arc::new(CoreMetrics::new(1));
    let b = Arc::new(CoreMetrics::new(1));
    let query = Answered {
        listen: 0,
        proto: Proto::Udp,
        qtype: 1,
        rcode: kubewire_wire::Rcode::NXDOMAIN,
        plugin: Plugin::Kubernetes,
        request_len: 50,
        response_len: 120,
    };
    a.answered(&query);
    b.answered(&query);
    b.answered(&Answered {
        qtype: 99,
        proto: Proto::Tcp,
        ..query
    });
    a.took(0, 2, 100_000);
    let scrape = Arc::new(Scrape::new(
        &["127.0.0.1:53".parse().unwrap()],
        &[],
        &[],
        vec![
            (0, a, Arc::new(CoreStatus::default())),
            (1, b, Arc::new(CoreStatus::default())),
        ],
        Arc::new(ControlMetrics::new(false)),
        (Vec::new(), Vec::new()),
        Vec::new(),
    ));
    let text = scrape.render().unwrap();
    assert!(text.contains("coredns_dns_requests_total{server=\"dns://127.0.0.1:53\",zone=\".\",view=\"\",proto=\"udp\",family=\"1\",type=\"A\"} 2\n"), "{text}");
    assert!(text.contains("type=\"other\"} 1\n"), "{text}");
    assert!(text.contains("coredns_dns_responses_total{server=\"dns://127.0.0.1:53\",zone=\".\",view=\"\",rcode=\"NXDOMAIN\",plugin=\"kubernetes\"} 3\n"), "{text}");
    assert!(text.contains("coredns_dns_request_duration_seconds_count{server=\"dns://127.0.0.1:53\",zone=\".\",view=\"\"} 2\n"), "{text}");
    assert!(
        text.contains("kubewire_core_queries_total{cpu=\"1\"} 2\n"),
        "{text}"
    );
    assert!(!text.contains("kubewire_api_contact_age_seconds"), "{text}");
    assert!(!text.contains("coredns_autopath_success"), "{text}");
    let with_autopath = Arc::new(Arc::try_unwrap(scrape).unwrap().with_autopath(true));
    let text = with_autopath.render().unwrap();
    assert!(
        text.contains("coredns_autopath_success_total{server=\"dns://127.0.0.1:53\"} 0\n"),
        "{text}"
    );
}

#[test]
fn kinds_not_watched_have_no_series() {
    let scrape = |control: ControlMetrics| {
        Arc::new(Scrape::new(
            &["127.0.0.1:53".parse().unwrap()],
            &[],
            &[],
            Vec::new(),
            Arc::new(control),
            (Vec::new(), Vec::new()),
            Vec::new(),
        ))
        .render()
        .unwrap()
    };
    let all = scrape(ControlMetrics::new(true));
    let some = scrape(ControlMetrics::new(true).with_watched(false, false));
    for kind in ["Service", "EndpointSlice", "Namespace"] {
        let series = format!("kubewire_watch_events_total{{kind=\"{kind}\"}} 0\n");
        assert!(all.contains(&series) && some.contains(&series), "{some}");
    }
    for kind in ["Pod", "ServiceImport"] {
        let series = format!("kubewire_relists_total{{kind=\"{kind}\"}} 0\n");
        assert!(all.contains(&series), "{all}");
        assert!(!some.contains(&format!("kind=\"{kind}\"")), "{some}");
    }
}

#[test]
fn buckets_are_inclusive_upper_bounds() {
    assert_eq!(bucket(&SIZE_BOUNDS, 0), 0);
    assert_eq!(bucket(&SIZE_BOUNDS, 100), 1);
    assert_eq!(bucket(&SIZE_BOUNDS, 101), 2);
    assert_eq!(bucket(&SIZE_BOUNDS, 70_000), SIZE_BOUNDS.len());
    assert_eq!(bucket(&DURATION_BOUNDS_NS, 250_000), 0);
    assert_eq!(bucket(&DURATION_BOUNDS_NS, 250_001), 1);
}
