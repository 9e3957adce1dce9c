//! What a reload changes, computed once from the two configurations.
//!
//! The reload's log line and what the new snapshot carries over are both
//! read from one [`SnapshotDiff`], so they cannot disagree: a change the
//! line does not name is a change the build did not act on.

use crate::config::{Config, PoolSpec, RouteSpec};

/// Everything that differs between a running configuration and its
/// replacement, in file order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SnapshotDiff {
    /// Pools that are new or differ, in the new file's order.
    pub pools: Vec<PoolDiff>,
    /// Pools that are gone.
    pub removed_pools: Vec<String>,
    /// The routes differ (any condition, target or order).
    pub routes: bool,
    /// `models.*` keys that differ: `aliases`, `fallbacks`, `refresh`.
    pub models: Vec<&'static str>,
}

/// How one pool differs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PoolDiff {
    pub name: String,
    /// The pool is new: everything in it is.
    pub added: bool,
    /// Backends, by name, added, removed, or kept (same address) with other
    /// settings.
    pub backends_added: Vec<String>,
    pub backends_removed: Vec<String>,
    pub backends_changed: Vec<String>,
    /// The pool's settings that differ, by their key: `strategy`,
    /// `retries`, `timeouts`, `health_check`, `circuit`, `queue`.
    pub settings: Vec<&'static str>,
}

impl PoolDiff {
    /// Whether the pool's setting `key` changed.
    pub fn changed(&self, key: &str) -> bool {
        self.settings.contains(&key)
    }

    fn between(old: &PoolSpec, new: &PoolSpec) -> PoolDiff {
        let mut diff = PoolDiff {
            name: new.name.clone(),
            ..PoolDiff::default()
        };
        for b in &new.backends {
            match old.backends.iter().find(|x| x.addr == b.addr) {
                None => diff.backends_added.push(b.name.clone()),
                Some(x) if x != b => diff.backends_changed.push(b.name.clone()),
                Some(_) => {}
            }
        }
        for b in &old.backends {
            if !new.backends.iter().any(|x| x.addr == b.addr) {
                diff.backends_removed.push(b.name.clone());
            }
        }
        let settings: [(&'static str, bool); 6] = [
            ("strategy", old.strategy != new.strategy),
            ("retries", old.retries != new.retries),
            ("timeouts", old.timeouts != new.timeouts),
            ("health_check", old.health != new.health),
            ("circuit", old.circuit != new.circuit),
            ("queue", old.queue != new.queue),
        ];
        diff.settings = settings
            .into_iter()
            .filter(|(_, differs)| *differs)
            .map(|(key, _)| key)
            .collect();
        diff
    }

    fn is_empty(&self) -> bool {
        !self.added
            && self.backends_added.is_empty()
            && self.backends_removed.is_empty()
            && self.backends_changed.is_empty()
            && self.settings.is_empty()
    }
}

/// A route as it decides: path prefix, header name and regex, model glob,
/// pool.
type RouteKey<'a> = (
    Option<&'a str>,
    Option<(&'a str, &'a str)>,
    Option<&'a str>,
    &'a str,
);

fn route_key(r: &RouteSpec) -> RouteKey<'_> {
    (
        r.path_prefix.as_deref(),
        r.header
            .as_ref()
            .map(|h| (h.name.as_str(), h.regex.as_str())),
        r.model.as_deref(),
        r.pool.as_str(),
    )
}

impl SnapshotDiff {
    /// What changes from `old` to `new`.
    pub fn between(old: &Config, new: &Config) -> SnapshotDiff {
        let pools = new
            .pools
            .iter()
            .map(|p| match old.pool(&p.name) {
                Some(before) => PoolDiff::between(before, p),
                None => PoolDiff {
                    name: p.name.clone(),
                    added: true,
                    ..PoolDiff::default()
                },
            })
            .filter(|d| !d.is_empty())
            .collect();
        let removed_pools = old
            .pools
            .iter()
            .filter(|p| new.pool(&p.name).is_none())
            .map(|p| p.name.clone())
            .collect();
        let routes = !old
            .routes
            .iter()
            .map(route_key)
            .eq(new.routes.iter().map(route_key));
        let (a, b) = (&old.models, &new.models);
        let models = [
            ("aliases", a.aliases != b.aliases),
            ("fallbacks", a.fallbacks != b.fallbacks),
            ("refresh", a.refresh != b.refresh),
        ]
        .into_iter()
        .filter(|(_, differs)| *differs)
        .map(|(key, _)| key)
        .collect();
        SnapshotDiff {
            pools,
            removed_pools,
            routes,
            models,
        }
    }

    /// How pool `name` changes; `None` when it does not.
    pub fn pool(&self, name: &str) -> Option<&PoolDiff> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
            && self.removed_pools.is_empty()
            && !self.routes
            && self.models.is_empty()
    }

    /// One line for the log: `+chat/gpu-4, -chat/gpu-2, ~pool code (circuit, queue), routes`.
    pub fn summary(&self, new: &Config) -> String {
        let mut parts = Vec::new();
        for p in &self.pools {
            let name = &p.name;
            if p.added {
                let n = new.pool(name).map_or(0, |s| s.backends.len());
                parts.push(format!("+pool {name} ({n} backends)"));
                continue;
            }
            parts.extend(p.backends_added.iter().map(|b| format!("+{name}/{b}")));
            parts.extend(p.backends_removed.iter().map(|b| format!("-{name}/{b}")));
            parts.extend(p.backends_changed.iter().map(|b| format!("~{name}/{b}")));
            if !p.settings.is_empty() {
                parts.push(format!("~pool {name} ({})", p.settings.join(", ")));
            }
        }
        parts.extend(self.removed_pools.iter().map(|p| format!("-pool {p}")));
        if self.routes {
            parts.push(format!("routes ({})", new.routes.len()));
        }
        parts.extend(self.models.iter().map(|m| format!("models.{m}")));
        if parts.is_empty() {
            "no changes".into()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_pool: &str, routes: &str, models: &str) -> Config {
        Config::from_yaml(&format!(
            "pools:\n  chat:\n{extra_pool}    backends:\n      - {{ name: a, url: \"http://127.0.0.1:9001\" }}\n\
             \x20     - {{ name: b, url: \"http://127.0.0.1:9002\" }}\n\
             \x20 code:\n    backends: [{{ name: c, url: \"http://127.0.0.1:9003\" }}]\n\
             routes:\n{routes}{models}"
        ))
        .unwrap()
    }

    const ROUTES: &str = "  - { model: \"qwen*\", pool: code }\n  - { pool: chat }\n";

    fn summary(old: &Config, new: &Config) -> String {
        SnapshotDiff::between(old, new).summary(new)
    }

    #[test]
    fn nothing_changed() {
        let c = config("", ROUTES, "");
        assert_eq!(summary(&c, &c), "no changes");
        assert!(SnapshotDiff::between(&c, &c).is_empty());
    }

    #[test]
    fn every_kind_of_change_is_named() {
        let old = config("", ROUTES, "");
        for (new, expected) in [
            (
                config("    circuit: { cooldown: 20s }\n", ROUTES, ""),
                "~pool chat (circuit)",
            ),
            (
                config("    queue: { max: 3 }\n", ROUTES, ""),
                "~pool chat (queue)",
            ),
            (
                config("    strategy: random\n    retries: 1\n", ROUTES, ""),
                "~pool chat (strategy, retries)",
            ),
            (
                config(
                    "",
                    "  - { model: \"llama*\", pool: code }\n  - { pool: chat }\n",
                    "",
                ),
                "routes (2)",
            ),
            (
                config("", ROUTES, "models:\n  aliases: { gpt-4o: llama3 }\n"),
                "models.aliases",
            ),
            (
                config(
                    "",
                    ROUTES,
                    "models:\n  fallbacks: { a: [b] }\n  refresh: 10s\n",
                ),
                "models.fallbacks, models.refresh",
            ),
        ] {
            assert_eq!(summary(&old, &new), expected);
        }
    }

    #[test]
    fn backends_and_pools_added_and_removed() {
        let old = config("", ROUTES, "");
        let new = Config::from_yaml(
            "pools:\n  chat:\n    backends:\n      - { name: a, url: \"http://127.0.0.1:9001\", weight: 2 }\n\
             \x20     - { name: d, url: \"http://127.0.0.1:9004\" }\n\
             \x20 extra:\n    backends: [{ url: \"http://127.0.0.1:9005\" }]\n\
             routes:\n  - { pool: chat }\n",
        )
        .unwrap();
        let diff = SnapshotDiff::between(&old, &new);
        assert_eq!(
            diff.summary(&new),
            "+chat/d, -chat/b, ~chat/a, +pool extra (1 backends), -pool code, routes (1)"
        );
        assert!(diff.pool("extra").is_some_and(|p| p.added));
        assert_eq!(diff.pool("chat").map(|p| p.changed("circuit")), Some(false));
    }
}
