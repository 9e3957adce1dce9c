//! The admin listener's `/metrics`, fetched and parsed into samples, so a
//! test asserts on exact values by name and labels.

use std::net::SocketAddr;

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Every sample of one scrape, and its text.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| sample(l).unwrap_or_else(|| panic!("not a sample: {l:?}")))
            .collect();
        Scrape {
            text: text.to_string(),
            samples,
        }
    }

    /// Samples of `name` whose labels include every pair of `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
    }

    /// The value of the one sample of `name` with `labels`; `None` when
    /// there is none. Panics when several match: the test named too few.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let all: Vec<&Sample> = self.matching(name, labels).collect();
        assert!(all.len() <= 1, "{name} {labels:?} matches {all:#?}");
        all.first().map(|s| s.value)
    }

    /// The sum of every sample of `name` with `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }
}

/// Parses `name{a="x",b="y"} value`.
fn sample(line: &str) -> Option<Sample> {
    let end = line.find(['{', ' '])?;
    let name = line[..end].to_string();
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once("=\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next()? {
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.to_string(), value));
            rest = after[close + 1..].trim_start_matches(',');
        }
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// `GET /metrics` of the admin listener at `admin`, with `token` as the
/// bearer token; the status and body.
pub async fn fetch(
    client: &reqwest::Client,
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), String> {
    let mut req = client.get(format!("http://{admin}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| e.to_string())?;
    Ok((status, body))
}

/// A scrape that must succeed.
pub async fn scrape(client: &reqwest::Client, admin: SocketAddr, token: Option<&str>) -> Scrape {
    let (status, body) = fetch(client, admin, "/metrics", token)
        .await
        .unwrap_or_else(|e| panic!("scraping {admin}: {e}"));
    assert_eq!(status, 200, "scraping {admin}: {body}");
    Scrape::parse(&body)
}
