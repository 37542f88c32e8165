//! A ready Prometheus recorder (feature `prometheus`): `metrics-exporter-prometheus` with
//! OpenTelemetry's recommended buckets for the duration histograms. Serve its text with
//! `web::metrics_router` (feature `axum`), or call [`PrometheusHandle::render`] yourself.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = sea_orm_replica::observe::prometheus::install()?;
//! // ... build the handle, run units ...
//! println!("{}", handle.render());
//! # Ok(()) }
//! ```

pub use metrics_exporter_prometheus::PrometheusHandle;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusRecorder};

use super::names;

/// OpenTelemetry's recommended bucket bounds for `db.client.operation.duration`, seconds.
pub const DURATION_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0];

/// The builder [`install`] uses: the duration histograms as Prometheus histograms with
/// [`DURATION_BUCKETS`] (the exporter's default would be a summary). Add your own settings
/// (global labels, more buckets) before installing.
pub fn builder() -> Result<PrometheusBuilder, BuildError> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::OPERATION_DURATION.into()),
            DURATION_BUCKETS,
        )?
        .set_buckets_for_metric(
            Matcher::Full(names::CAUSAL_WAIT_DURATION.into()),
            DURATION_BUCKETS,
        )
}

/// Installs a Prometheus recorder as the process's global recorder and describes the
/// library's metrics to it. Fails when a global recorder is already installed.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = builder()?.install_recorder()?;
    super::describe();
    Ok(handle)
}

/// A recorder that is not installed: for a thread-local recorder
/// (`metrics::with_local_recorder`), tests and benchmarks.
pub fn recorder() -> Result<PrometheusRecorder, BuildError> {
    Ok(builder()?.build_recorder())
}
