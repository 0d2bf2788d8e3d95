//! The OpenAPI document a real central server serves at `/api/v1/openapi.json` describes the
//! routes that exist: the same (method, path) pairs as `central::server::ROUTES`, each of which
//! the running server answers (not with its "no such endpoint" fallback, nor with 405).

mod common;

use common::{Backend, Network};
use std::collections::BTreeSet;

#[test]
fn the_openapi_document_describes_the_routes_that_exist() {
    let network = Network::new(&Backend::Sqlite, &["north"]);
    let base = network.central.url();
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut served = agent.get(format!("{base}/api/v1/openapi.json")).call().expect("the document");
    assert_eq!(served.status().as_u16(), 200);
    let doc: serde_json::Value =
        serde_json::from_str(&served.body_mut().read_to_string().expect("a body")).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("operations").keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let routes: BTreeSet<(String, String)> =
        central::server::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, routes, "the document and the routes differ");

    for (method, path) in &routes {
        let url = format!("{base}{}", path.replace("{site}", "north"));
        let mut answer = match method.as_str() {
            "get" => agent.get(&url).call(),
            "post" => agent.post(&url).send_empty(),
            other => panic!("a method the test does not send: {other}"),
        }
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = answer.status().as_u16();
        let body = answer.body_mut().read_to_string().unwrap_or_default();
        assert_ne!(status, 405, "{method} {path} is not served with that method");
        assert!(!(status == 404 && body.contains("no such endpoint")), "{method} {path} does not exist: {body}");
    }
    // And the fallback is what a route that does not exist gets.
    let missing = agent.get(format!("{base}/api/v1/nothing")).call().expect("an answer");
    assert_eq!(missing.status().as_u16(), 404);
}
