//! Which CPUs the proxies get and which the harness (load generator and
//! backends) gets, as `taskset` lists and as CPU numbers for `/proc/stat`.

/// Which CPUs the proxies and the harness get.
pub struct CpuPlan {
    /// `taskset -c` lists; `None` when not pinning.
    pub proxy: Option<String>,
    pub harness: Option<String>,
    /// The same as CPU numbers, for reading `/proc/stat`.
    pub proxy_cpus: Option<Vec<usize>>,
    pub harness_cpus: Vec<usize>,
    /// The plan in words, for the log and the report's header.
    pub text: String,
}

impl CpuPlan {
    /// With four CPUs or more, the proxy gets two (one per worker) and the
    /// harness the rest. With two or three, the proxy gets the last one and
    /// the harness the others: a proxy and the load driving it on the same
    /// CPU would measure the scheduler more than the proxy. With one, or
    /// `--pin off`, nothing is pinned.
    pub fn new(pin: &str, cpus: &[usize]) -> CpuPlan {
        let list = |c: &[usize]| {
            c.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let n = cpus.len();
        if pin == "off" || n < 2 {
            return CpuPlan {
                proxy: None,
                harness: None,
                proxy_cpus: None,
                harness_cpus: cpus.to_vec(),
                text: format!("not pinned; everything shares CPUs {}", list(cpus)),
            };
        }
        let split = if n >= 4 { n - 2 } else { n - 1 };
        let (harness, proxy) = cpus.split_at(split);
        CpuPlan {
            proxy: Some(list(proxy)),
            harness: Some(list(harness)),
            proxy_cpus: Some(proxy.to_vec()),
            harness_cpus: harness.to_vec(),
            text: format!(
                "proxy (all its workers) on CPU {}; load generator and backends (mock, static nginx) on CPU {}",
                list(proxy),
                list(harness)
            ),
        }
    }
}
