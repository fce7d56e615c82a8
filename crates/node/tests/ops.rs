//! The shipped Grafana dashboards are well-formed and chart only metrics a node exports.

use std::collections::BTreeSet;
use std::path::Path;

/// Every metric name a node and its gateway register (histograms also as _bucket, _sum, _count).
fn exported() -> BTreeSet<String> {
    let m = trainmesh_actors::metrics::NodeMetrics::new();
    let g = trainmesh_actors::metrics::GatewayMetrics::new("n", &["/v1/status"]);
    let mut names = BTreeSet::new();
    for f in m.registry.gather().into_iter().chain(g.registry.gather()) {
        let n = f.name().to_string();
        if f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
            for s in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{n}{s}"));
            }
        }
        names.insert(n);
    }
    names
}

fn metric_names(expr: &str) -> Vec<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("trainmesh_"))
        .map(str::to_string)
        .collect()
}

#[test]
fn dashboards_are_well_formed_and_use_exported_metrics() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ops/grafana");
    let exported = exported();
    let mut dashboards = 0;
    let mut uids = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().and_then(|x| x.to_str()) != Some("json") {
            continue;
        }
        dashboards += 1;
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let name = path.display();
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{name}: title"
        );
        assert!(
            uids.insert(d["uid"].as_str().unwrap().to_string()),
            "{name}: uid reused"
        );
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{name}: schemaVersion"
        );
        let panels = d["panels"].as_array().expect("panels");
        assert!(!panels.is_empty(), "{name}: no panels");
        let mut ids = BTreeSet::new();
        for p in panels {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: panel id reused"
            );
            assert!(p["title"].as_str().is_some(), "{name}: panel title");
            for k in ["h", "w", "x", "y"] {
                assert!(p["gridPos"][k].as_u64().is_some(), "{name}: gridPos.{k}");
            }
            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{name}: panel without a query");
            for t in targets {
                let expr = t["expr"].as_str().expect("expr");
                let used = metric_names(expr);
                assert!(
                    !used.is_empty(),
                    "{name}: {expr} charts no trainmesh metric"
                );
                for m in used {
                    assert!(
                        exported.contains(&m),
                        "{name}: {m} is not exported by a node"
                    );
                }
            }
        }
    }
    assert!(
        dashboards >= 3,
        "consensus, training and economics dashboards"
    );
}
