//! A site's own page (`outpost site serve`) as an attacker would try it: a form posted from
//! another site's page (a browser says so in `Sec-Fetch-Site` and `Origin`) may not pause,
//! disable or sync the site; a state that does not exist is refused; the page's own forms work.

mod common;

use common::{Backend, Network};

/// POSTs a form to the site's page with these headers: the status, and the sync state after.
fn post(url: &str, path: &str, form: &str, headers: &[(&str, &str)]) -> u16 {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
    let mut request = agent.post(format!("{url}{path}")).content_type("application/x-www-form-urlencoded");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send(form.to_owned()).expect("POST").status().as_u16()
}

fn state(url: &str) -> String {
    let status = testkit::http::Http::new(url).get("/api/status", &[]);
    let status: serde_json::Value = serde_json::from_slice(&status.body).expect("the status");
    status["state"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn forms_from_another_sites_page_are_refused_and_the_pages_own_work() {
    let network = Network::new(&Backend::Sqlite, &["north"]);
    let (_serving, url) = network.site("north").serve();
    let host = url.trim_start_matches("http://");

    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
    ] {
        assert_eq!(post(&url, "/sync-state", "state=disabled", &headers), 403, "{headers:?}");
        assert_eq!(post(&url, "/sync-now", "", &headers), 403, "{headers:?}");
        assert_eq!(state(&url), "active", "a refused form changed nothing ({headers:?})");
    }
    assert_eq!(post(&url, "/sync-state", "state=off", &[("sec-fetch-site", "same-origin")]), 400);
    assert_eq!(post(&url, "/sync-state", "nothing=here", &[]), 422, "a form without a state");

    let own_page = [("sec-fetch-site", "same-origin"), ("origin", &format!("http://{host}") as &str)];
    assert_eq!(post(&url, "/sync-state", "state=paused", &own_page), 303);
    assert_eq!(state(&url), "paused");
    assert_eq!(post(&url, "/sync-state", "state=active", &own_page), 303);
    assert_eq!(state(&url), "active");
}
