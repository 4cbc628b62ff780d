//! Reads need a login, tokens carry roles, failed passwords are limited, and an admin can see
//! and clear the limits: through the router, without a socket.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::test_support::{TOKEN, VIEWER_TOKEN, basic, call, error, fixture};
use super::*;

/// Status, `WWW-Authenticate` values and `Retry-After` of a request with `authorization`.
async fn raw(
    app: &AppState,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
) -> (StatusCode, Vec<String>, Option<String>) {
    raw_from(app, "10.0.0.1", method, uri, authorization).await
}

/// As `raw`, from the remote address `from`.
async fn raw_from(
    app: &AppState,
    from: &str,
    method: &str,
    uri: &str,
    authorization: Option<&str>,
) -> (StatusCode, Vec<String>, Option<String>) {
    let address = std::net::SocketAddr::new(from.parse().unwrap(), 40000);
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .extension(axum::extract::ConnectInfo(address));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let response = super::app(app.clone())
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let challenges = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().to_owned());
    let _ = response.into_body().collect().await.unwrap();
    (status, challenges, retry)
}

fn failures(app: &AppState, reason: &str) -> u64 {
    app.telemetry
        .api_auth_failures
        .with_label_values(&[reason])
        .get()
}

#[tokio::test]
async fn every_read_under_api_v1_needs_a_login_and_a_401_offers_both_schemes() {
    let f = fixture();
    let routes = [
        "/api/v1/audit",
        "/api/v1/announcements",
        "/api/v1/schedules",
        "/api/v1/agents",
        "/api/v1/agents/aula",
        "/api/v1/agents/aula/events",
        "/api/v1/announcements/any",
        "/api/v1/login-limits",
    ];
    for (index, route) in routes.iter().enumerate() {
        let (status, challenges, _) = raw(&f.app, "GET", route, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{route}");
        assert_eq!(
            challenges,
            vec![
                "Bearer realm=\"pantau\"",
                "Basic realm=\"pantau\", charset=\"UTF-8\""
            ],
            "{route}"
        );
        assert_eq!(failures(&f.app, "missing"), index as u64 + 1);
    }
    let (status, _, _) = raw(&f.app, "GET", "/api/v1/audit", Some("Bearer not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Health, readiness and (by default) the scrape stay open.
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_ne!(
            raw(&f.app, "GET", open, None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_speak_and_an_untagged_token_is_an_operator() {
    let f = fixture();
    let viewer = format!("Bearer {VIEWER_TOKEN}");
    assert_eq!(
        raw(&f.app, "GET", "/api/v1/audit", Some(&viewer)).await.0,
        StatusCode::OK
    );
    let body = serde_json::json!({"text": "Tes", "targets": ["aula"]});
    let (status, value) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(VIEWER_TOKEN),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(&value).contains("this needs an operator"), "{value}");
    assert!(f.sent.lock().unwrap().is_empty(), "nothing was sent");
    let (status, _) = call(
        &f.app,
        "POST",
        "/api/v1/announcements",
        Some(TOKEN),
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    // A viewer user (HTTP Basic) reads too.
    let (status, _) = call(
        &f.app,
        "GET",
        "/api/v1/schedules",
        Some(&basic("tamu:rahasia-tamu")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_needs_its_token_once_configured() {
    let f = fixture();
    let app = f.app.clone().with_credentials(Credentials::fixed(
        Tokens::parse(TOKEN).unwrap(),
        accounts::Accounts::default(),
        Some(Tokens::parse("prometheus-scrape-token-1").unwrap()),
    ));
    let (status, challenges, _) = raw(&app, "GET", "/metrics", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(challenges.len(), 2);
    let api_token = format!("Bearer {TOKEN}");
    assert_eq!(
        raw(&app, "GET", "/metrics", Some(&api_token)).await.0,
        StatusCode::UNAUTHORIZED,
        "an API token is not a scrape token"
    );
    assert_eq!(
        raw(
            &app,
            "GET",
            "/metrics",
            Some("Bearer prometheus-scrape-token-1")
        )
        .await
        .0,
        StatusCode::OK
    );
    assert_eq!(raw(&app, "GET", "/healthz", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn wrong_passwords_are_limited_with_retry_after_even_for_the_right_one_then() {
    let f = fixture();
    let wrong = basic("rina:salah-salah-salah");
    for _ in 0..10 {
        let (status, _, _) = raw(&f.app, "GET", "/api/v1/audit", Some(&wrong)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    let (status, _, retry) = raw(&f.app, "GET", "/api/v1/audit", Some(&wrong)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = retry.expect("Retry-After").parse().unwrap();
    assert!((1..=300).contains(&retry), "{retry}");
    let right = basic("rina:rahasia-rina");
    assert_eq!(
        raw(&f.app, "GET", "/api/v1/audit", Some(&right)).await.0,
        StatusCode::TOO_MANY_REQUESTS,
        "the address is limited, right password or not"
    );
    assert_eq!(failures(&f.app, "wrong"), 10);
    assert_eq!(failures(&f.app, "rate_limited"), 2);
    // Tokens are not passwords: they still work from the limited address.
    let token = format!("Bearer {TOKEN}");
    assert_eq!(
        raw(&f.app, "GET", "/api/v1/audit", Some(&token)).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_stranger_cannot_lock_staff_out_and_an_admin_lists_and_clears_the_limits() {
    let f = fixture();
    let wrong = basic("rina:salah-salah-salah");
    for _ in 0..10 {
        raw_from(&f.app, "10.9.9.9", "GET", "/api/v1/audit", Some(&wrong)).await;
    }
    assert_eq!(
        raw_from(&f.app, "10.9.9.9", "GET", "/api/v1/audit", Some(&wrong))
            .await
            .0,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Rina, from her own desk, is not locked out by the stranger.
    let rina = basic("rina:rahasia-rina");
    assert_eq!(
        raw_from(&f.app, "10.0.0.5", "GET", "/api/v1/audit", Some(&rina))
            .await
            .0,
        StatusCode::OK
    );
    let admin = basic("adi:rahasia-adi");
    let list = |auth: String| {
        let app = f.app.clone();
        async move {
            let (status, _, _) =
                raw_from(&app, "10.0.0.6", "GET", "/api/v1/login-limits", Some(&auth)).await;
            status
        }
    };
    assert_eq!(list(format!("Bearer {TOKEN}")).await, StatusCode::FORBIDDEN);
    assert_eq!(list(admin.clone()).await, StatusCode::OK);
    let limited = f.app.login.limiter.limited(std::time::Instant::now());
    assert_eq!(limited.len(), 1, "{limited:?}");
    assert_eq!(
        (
            limited[0].kind,
            limited[0].key.as_str(),
            limited[0].failures
        ),
        ("address", "10.9.9.9", 10)
    );
    let (status, _, _) = raw_from(
        &f.app,
        "10.0.0.6",
        "DELETE",
        "/api/v1/login-limits?address=not-an-ip",
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = raw_from(
        &f.app,
        "10.0.0.6",
        "DELETE",
        "/api/v1/login-limits?address=10.9.9.9",
        Some(&admin),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        f.app
            .login
            .limiter
            .limited(std::time::Instant::now())
            .is_empty()
    );
    assert_eq!(
        raw_from(&f.app, "10.9.9.9", "GET", "/api/v1/audit", Some(&rina))
            .await
            .0,
        StatusCode::OK
    );
}
