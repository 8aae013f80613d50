//! The contract's conventions: health, routing errors, `Cache-Control`, CORS.

use crate::support::{Server, assert_problem, http, standalone_only};

#[tokio::test]
async fn health_answers_ok_without_caching() {
    let server = Server::start();
    let response = http()
        .get(server.url("/v1/health"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(body, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_are_problems() {
    let server = Server::start();
    let client = http();
    for path in [
        "/v2/health",
        "/v1/rooms",
        "/v1/rooms/r/unknown",
        "/v1/healthz",
    ] {
        let response = client.get(server.url(path)).send().await.expect("request");
        assert_problem(response, 404, "not-found").await;
    }
    let response = client
        .put(server.url("/v1/rooms/r/messages"))
        .send()
        .await
        .expect("request");
    let allow = response.headers().get("allow").cloned();
    assert_problem(response, 405, "method-not-allowed").await;
    let allow = allow.expect("405 names the allowed methods");
    let allow = allow.to_str().expect("text");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let response = client
        .get(server.url("/v1/rooms/r/peers"))
        .send()
        .await
        .expect("request");
    assert_problem(response, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn cors_preflight_and_responses_follow_the_default_allow_list() {
    let server = Server::start();
    let client = http();
    let preflight = client
        .request(reqwest::Method::OPTIONS, server.url("/v1/rooms/r/messages"))
        .header("origin", "http://app.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    let headers = preflight.headers();
    assert_eq!(headers["access-control-allow-origin"], "*");
    let allowed = headers["access-control-allow-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(
        headers["access-control-allow-methods"]
            .to_str()
            .expect("text")
            .contains("POST")
    );
    assert!(headers.contains_key("access-control-max-age"));
    assert_eq!(headers["cache-control"], "no-store");

    let response = client
        .get(server.url("/v1/health"))
        .header("origin", "http://app.example")
        .send()
        .await
        .expect("request");
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let exposed = response.headers()["access-control-expose-headers"]
        .to_str()
        .expect("text")
        .to_ascii_lowercase();
    assert!(exposed.contains("retry-after"), "{exposed}");
}

#[tokio::test]
async fn cors_allow_list_admits_only_listed_origins() {
    let server = Server::start_with(&[(
        "SIGNALPOST_CORS_ORIGINS",
        "https://good.example,https://also.example",
    )]);
    let client = http();
    let from = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, server.url("/v1/rooms/r/peers"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let good = from("https://also.example").await.expect("preflight");
    assert_eq!(
        good.headers()["access-control-allow-origin"],
        "https://also.example"
    );
    let bad = from("https://evil.example").await.expect("preflight");
    assert!(!bad.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn serves_the_demo_page_and_the_client_library() {
    if standalone_only("the demo page and client library are served by the standalone server") {
        return;
    }
    let server = Server::start();
    let client = http();
    for (path, content_type) in [("/", "text/html"), ("/signalpost.js", "text/javascript")] {
        let response = client.get(server.url(path)).send().await.expect("request");
        assert_eq!(response.status(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .expect("text")
                .starts_with(content_type),
            "{path}"
        );
    }
    let response = client
        .get(server.url("/v1/openapi.yaml"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .expect("text")
            .starts_with("openapi: 3.1")
    );
}
