//! `GET /metrics`: everything [`Metrics`] holds, in Prometheus's text
//! format, encoded by the `prometheus` crate from its registry.

use super::router::{error, respond, Page};
use crate::metrics::Metrics;
use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora_http::RequestHeader;
use std::sync::Arc;

pub struct MetricsPage {
    metrics: Arc<Metrics>,
}

impl MetricsPage {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsPage { metrics }
    }
}

#[async_trait]
impl Page for MetricsPage {
    async fn get(&self, _: &RequestHeader) -> Response<Vec<u8>> {
        match self.metrics.encode() {
            Ok(text) => respond(StatusCode::OK, self.metrics.content_type(), text),
            Err(e) => {
                log::error!("cannot encode the metrics: {e}");
                error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "the metrics could not be encoded",
                )
            }
        }
    }
}
