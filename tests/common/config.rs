//! A typed builder for the configurations tests start the proxy with,
//! instead of YAML text assembled with `format!` and patched with
//! `.replace()`. It builds a YAML document as values, so a key is set or
//! changed where it belongs, and the proxy's own validation (which refuses
//! unknown keys) checks what the test wrote.
//!
//! ```ignore
//! let yaml = Fleet::new(addr)
//!     .server("timeouts.client_send", "2s")
//!     .pool(Pool::new("chat").set("strategy", "priority").backend(Backend::of(&m).set("priority", 9)))
//!     .yaml();
//! ```

use serde_yaml::{Mapping, Value};
use std::net::SocketAddr;
use switchyard::mock::MockServer;

/// Sets `dotted` (`timeouts.idle`) in `map`, making the mappings on the way.
fn set_path(map: &mut Mapping, dotted: &str, value: Value) {
    let mut keys = dotted.split('.').peekable();
    let mut at = map;
    while let Some(key) = keys.next() {
        let key = Value::from(key);
        if keys.peek().is_none() {
            at.insert(key, value);
            return;
        }
        let next = at
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if !next.is_mapping() {
            *next = Value::Mapping(Mapping::new());
        }
        at = next.as_mapping_mut().expect("a mapping");
    }
}

/// One backend of a pool.
#[derive(Debug, Clone)]
pub struct Backend(Mapping);

impl Backend {
    /// A mock backend, under the mock's name.
    pub fn of(mock: &MockServer) -> Self {
        Backend::url(&mock.url()).set("name", mock.name())
    }

    pub fn url(url: &str) -> Self {
        let mut map = Mapping::new();
        map.insert("url".into(), url.into());
        Backend(map)
    }

    /// Any backend key: `weight`, `priority`, `max_in_flight`, `models`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.0, key, value.into());
        self
    }
}

/// One pool.
#[derive(Debug, Clone)]
pub struct Pool {
    name: String,
    map: Mapping,
    backends: Vec<Value>,
}

impl Pool {
    /// A pool without active health checks, so only what the test does
    /// changes a backend's state.
    pub fn new(name: &str) -> Self {
        let mut pool = Pool {
            name: name.to_string(),
            map: Mapping::new(),
            backends: Vec::new(),
        };
        set_path(&mut pool.map, "health_check.type", "none".into());
        pool
    }

    /// Any pool key, dotted: `strategy`, `timeouts.idle`,
    /// `health_check.interval`, `circuit.cooldown`, `queue.max`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.map, key, value.into());
        self
    }

    /// Fast HTTP health checks on `/health` (the mock answers it).
    pub fn http_checks(self, interval: &str) -> Self {
        self.set("health_check.type", "http")
            .set("health_check.path", "/health")
            .set("health_check.interval", interval)
            .set("health_check.timeout", "500ms")
            .set("health_check.healthy_threshold", 1)
            .set("health_check.unhealthy_threshold", 1)
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.backends.push(Value::Mapping(backend.0));
        self
    }

    /// A backend for each mock, in order.
    pub fn mocks(self, mocks: &[&MockServer]) -> Self {
        mocks
            .iter()
            .fold(self, |pool, m| pool.backend(Backend::of(m)))
    }
}

/// A whole configuration.
#[derive(Debug, Clone)]
pub struct Fleet {
    root: Mapping,
    pools: Mapping,
    routes: Vec<Value>,
}

impl Fleet {
    /// Listening on `listen`, two worker threads.
    pub fn new(listen: SocketAddr) -> Self {
        let mut root = Mapping::new();
        set_path(
            &mut root,
            "server.listen",
            Value::Sequence(vec![listen.to_string().into()]),
        );
        set_path(&mut root, "server.threads", 2.into());
        Fleet {
            root,
            pools: Mapping::new(),
            routes: Vec::new(),
        }
    }

    /// Any `server` key, dotted: `max_connections`, `timeouts.client_send`.
    pub fn server(mut self, key: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.root, &format!("server.{key}"), value.into());
        self
    }

    /// Any `admin` key, dotted: `listen`, `token_file`.
    pub fn admin(mut self, key: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.root, &format!("admin.{key}"), value.into());
        self
    }

    /// Any top-level key, dotted: `access_log.path`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.root, key, value.into());
        self
    }

    /// Any `models` key, dotted: `refresh`, `aliases.gpt-4o`.
    pub fn models(mut self, key: &str, value: impl Into<Value>) -> Self {
        set_path(&mut self.root, &format!("models.{key}"), value.into());
        self
    }

    pub fn pool(mut self, pool: Pool) -> Self {
        let mut map = pool.map;
        map.insert("backends".into(), Value::Sequence(pool.backends));
        self.pools.insert(pool.name.into(), Value::Mapping(map));
        self
    }

    /// A route to `pool` when every `(condition, value)` holds
    /// (`("model", "qwen*")`, `("path_prefix", "/api")`); none is a catch-all.
    pub fn route(mut self, pool: &str, conditions: &[(&str, &str)]) -> Self {
        let mut map = Mapping::new();
        for (key, value) in conditions {
            map.insert((*key).into(), (*value).into());
        }
        map.insert("pool".into(), pool.into());
        self.routes.push(Value::Mapping(map));
        self
    }

    /// The YAML text.
    pub fn yaml(&self) -> String {
        let mut root = self.root.clone();
        root.insert("pools".into(), Value::Mapping(self.pools.clone()));
        if !self.routes.is_empty() {
            root.insert("routes".into(), Value::Sequence(self.routes.clone()));
        }
        serde_yaml::to_string(&root).expect("a YAML document")
    }
}
