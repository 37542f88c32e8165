//! The Prometheus endpoint (features `axum` and `prometheus`): a router that serves the
//! recorder's text exposition.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = sea_orm_replica::observe::prometheus::install()?;
//! let app: axum::Router = axum::Router::new()
//!     .nest("/_db/metrics", sea_orm_replica::web::metrics_router(handle));
//! # Ok(()) }
//! ```

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::observe::prometheus::PrometheusHandle;

/// `GET /`: the metrics in Prometheus' text format (histograms drained first, so a scrape
/// sees every value recorded before it).
pub fn metrics_router(handle: PrometheusHandle) -> Router {
    Router::new().route(
        "/",
        get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    )
}
