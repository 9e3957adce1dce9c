//! Model discovery: asks every backend whose models the file does not fix
//! for its list, every `models.refresh`, and at once after a reload brings
//! backends nobody has asked yet.
//!
//! A backend whose list cannot be fetched keeps its last known list (a
//! restarting Ollama should not lose its models for a refresh), and the
//! failure is logged once, not at every refresh.

use crate::metrics::Metrics;
use crate::models::discovery::{bounded, discover, summary};
use crate::models::ModelEntry;
use crate::state::SharedState;
use async_trait::async_trait;
use log::{info, warn};
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The background service.
pub struct DiscoveryService {
    state: Arc<SharedState>,
    /// Counts every failed fetch, where the log says only the first.
    metrics: Arc<Metrics>,
}

impl DiscoveryService {
    pub fn new(state: Arc<SharedState>, metrics: Arc<Metrics>) -> Self {
        DiscoveryService { state, metrics }
    }

    /// One round over every backend whose list is not fixed by the file.
    async fn round(&self, failing: &mut HashMap<SocketAddr, bool>) {
        let backends = self.state.load().backends(|up| up.spec.models.is_none());
        let rounds = backends.into_iter().map(|up| async move {
            let result = discover(&up.spec).await;
            (up, result)
        });
        for (up, result) in futures_util::future::join_all(rounds).await {
            let models = &up.models;
            match result {
                Ok(list) => {
                    let (list, dropped) = bounded(list);
                    let old = models.get();
                    // Logged when the models change, not when only what is
                    // said of them does: vLLM stamps `created` with the
                    // time of each request.
                    let names =
                        |l: &[ModelEntry]| l.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
                    if old.as_ref().is_none_or(|old| names(old) != names(&list)) {
                        if dropped.any() {
                            warn!("backend {}: {dropped}", up.spec.name);
                        }
                        info!("backend {}: {}", up.spec.name, summary(&list));
                    }
                    if old.is_none_or(|old| *old != list) {
                        models.set(list);
                    }
                    failing.insert(up.spec.addr, false);
                }
                Err(e) => {
                    self.metrics.discovery_failed(&up.spec.name);
                    if !failing.insert(up.spec.addr, true).unwrap_or(false) {
                        warn!(
                            "backend {}: cannot list models, keeping the last known list: {e}",
                            up.spec.name
                        );
                    }
                }
            }
        }
    }
}

#[async_trait]
impl BackgroundService for DiscoveryService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut failing = HashMap::new();
        let mut published = self.state.subscribe();
        loop {
            published.borrow_and_update();
            self.round(&mut failing).await;
            let refresh = self.state.load().config.models.refresh;
            // Wake early when a reload brings backends nobody has asked yet.
            let next = tokio::time::Instant::now().checked_add(refresh);
            let until_next = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = until_next => {}
                _ = published.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
