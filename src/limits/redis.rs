//! Limits counted in Redis (or Valkey), shared by every instance that
//! names the same one: `limits.store.redis`.
//!
//! A request's check is one round trip: one Lua script reads every bucket
//! of the request (GCRA for requests, a token bucket that may go into debt
//! for tokens, a counter for concurrency), and only when all admit it
//! writes them, atomically. Time is Redis's own (`TIME`), so instances
//! whose clocks differ agree. Charging tokens and releasing a concurrency
//! slot are a round trip each, off the request's path.
//!
//! Each check waits at most `limits.store.timeout`; past it, or when Redis
//! cannot be reached, `on_store_error` decides.

use super::window::Window;
use super::{Limit, Refused, Subject, SubjectId};
use crate::limits::StoreSpec;
use redis::aio::ConnectionManager;
use redis::Script;
use std::fmt::Write;
use std::sync::OnceLock;
use std::time::Duration;

/// A concurrency count whose releases were lost (an instance killed with
/// requests in flight) heals after this long without a new request.
const CONCURRENCY_TTL_MS: u64 = 3_600_000;

/// ARGV per key: kind, limit, per (microseconds), burst. Returns four
/// numbers per key: admitted (1/0), remaining, reset and wait (µs).
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local writes = {}
local ok = true
for i, key in ipairs(KEYS) do
  local kind = ARGV[i * 4 - 3]
  local limit = tonumber(ARGV[i * 4 - 2])
  local per = tonumber(ARGV[i * 4 - 1])
  local burst = tonumber(ARGV[i * 4])
  local admit, remaining, reset, wait = 1, 0, 0, 0
  if kind == 'c' then
    local n = tonumber(redis.call('GET', key) or '0')
    if n < limit then
      remaining = limit - n - 1
      writes[#writes + 1] = {'c', key}
    else
      admit, wait = 0, 1000000
    end
  else
    local interval = per / limit
    local tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
    if kind == 'r' then
      local tau = burst * interval
      local new = tat + interval
      if new - now > tau then
        admit, wait, reset = 0, new - now - tau, tat - now
      else
        remaining = math.floor((tau - (new - now)) / interval)
        reset = new - now
        writes[#writes + 1] = {'r', key, new, new - now}
      end
    else
      local level = tat - now
      remaining = math.floor(math.max(per - level, 0) / interval)
      reset = level
      if remaining < 1 then
        admit, wait = 0, level + interval - per
      end
    end
  end
  if admit == 0 then ok = false end
  out[#out + 1] = admit
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(wait)
end
if ok then
  for _, w in ipairs(writes) do
    if w[1] == 'c' then
      redis.call('INCR', w[2])
      redis.call('PEXPIRE', w[2], ARGV[#ARGV])
    else
      redis.call('SET', w[2], string.format('%.0f', w[3]), 'PX', math.ceil(w[4] / 1000) + 1)
    end
  end
end
return out
"#;

/// KEYS[1] a token bucket; ARGV tokens, limit, per (µs).
const CHARGE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
local new = tat + tonumber(ARGV[1]) * tonumber(ARGV[3]) / tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1)
return 1
"#;

/// KEYS[1] a concurrency count.
const RELEASE: &str = r#"
local n = redis.call('DECR', KEYS[1])
if n <= 0 then redis.call('DEL', KEYS[1]) end
return n
"#;

/// The Redis store of one `limits.store`.
pub struct RedisStore {
    pub spec: StoreSpec,
    client: redis::Client,
    /// Made on first use, inside a runtime; it reconnects by itself.
    conn: OnceLock<ConnectionManager>,
    admit: Script,
    charge: Script,
    release: Script,
}

/// What went wrong asking Redis.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
}

impl RedisStore {
    pub fn new(spec: StoreSpec) -> Result<Self, StoreError> {
        let client = redis::Client::open(spec.redis.as_str())?;
        Ok(RedisStore {
            spec,
            client,
            conn: OnceLock::new(),
            admit: Script::new(ADMIT),
            charge: Script::new(CHARGE),
            release: Script::new(RELEASE),
        })
    }

    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(conn) = self.conn.get() {
            return Ok(conn.clone());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.spec.timeout.max(Duration::from_millis(100))))
            .set_response_timeout(Some(self.spec.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let made = ConnectionManager::new_lazy_with_config(self.client.clone(), config)?;
        Ok(self.conn.get_or_init(|| made).clone())
    }

    /// Checks and, when every bucket admits, takes the request's share of
    /// `subjects`, in one round trip.
    pub async fn admit(
        &self,
        subjects: &[Subject<'_>],
    ) -> Result<Result<Admitted, Refused>, StoreError> {
        let mut conn = self.conn()?;
        let mut invocation = self.admit.prepare_invoke();
        let mut order: [(usize, Limit); 9] = [(0, Limit::Requests); 9];
        let mut n = 0;
        for (i, subject) in subjects.iter().enumerate() {
            let set = subject.set;
            let mut add = |limit: Limit, kind: &str, max: u64, per: Duration, burst: u32| {
                invocation
                    .key(key_of(subject, kind))
                    .arg(kind)
                    .arg(max)
                    .arg(per.as_micros() as u64)
                    .arg(burst);
                order[n] = (i, limit);
                n += 1;
            };
            if let Some(c) = set.concurrent {
                add(Limit::Concurrent, "c", u64::from(c), Duration::ZERO, 0);
            }
            if let Some(t) = set.tokens {
                add(Limit::Tokens, "t", t.limit, t.per, 0);
            }
            if let Some(r) = set.requests {
                add(Limit::Requests, "r", u64::from(r.limit), r.per, r.burst);
            }
        }
        invocation.arg(CONCURRENCY_TTL_MS);
        let reply: Vec<i64> =
            tokio::time::timeout(self.spec.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| StoreError::Timeout(self.spec.timeout))??;
        let mut admitted = Admitted::default();
        let mut refused: Option<Refused> = None;
        for (j, (i, limit)) in order[..n].iter().enumerate() {
            let Some(&[ok, remaining, reset, wait]) = reply
                .get(j * 4..j * 4 + 4)
                .and_then(|s| <&[i64; 4]>::try_from(s).ok())
            else {
                continue;
            };
            let micros = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
            let subject = &subjects[*i];
            let window = |max: u64| Window {
                limit: max,
                remaining: u64::try_from(remaining).unwrap_or(0),
                reset: micros(reset),
            };
            match limit {
                Limit::Requests => {
                    let max = subject.set.requests.map_or(0, |r| u64::from(r.limit));
                    admitted.requests = Some(Window::tighter(admitted.requests, window(max)));
                }
                Limit::Tokens => {
                    let max = subject.set.tokens.map_or(0, |t| t.limit);
                    admitted.tokens = Some(Window::tighter(admitted.tokens, window(max)));
                }
                Limit::Concurrent => {}
            }
            if ok == 0 && refused.is_none() {
                refused = Some(Refused::new(subject, *limit, Some(micros(wait))));
            }
        }
        Ok(match refused {
            Some(mut r) => {
                r.requests = admitted.requests;
                r.tokens = admitted.tokens;
                Err(r)
            }
            None => Ok(admitted),
        })
    }

    /// Charges `tokens` to the token buckets of `subjects`, and gives back
    /// their concurrency slots, off the request's path.
    pub fn finish(self: &std::sync::Arc<Self>, keys: Vec<Finish>) {
        if keys.is_empty() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.clone();
        handle.spawn(async move {
            let Ok(mut conn) = store.conn() else { return };
            for finish in keys {
                let done = match &finish {
                    Finish::Charge { key, tokens, rate } => {
                        store
                            .charge
                            .key(key)
                            .arg(*tokens)
                            .arg(rate.limit)
                            .arg(rate.per.as_micros() as u64)
                            .invoke_async::<i64>(&mut conn)
                            .await
                    }
                    Finish::Release { key } => {
                        store.release.key(key).invoke_async::<i64>(&mut conn).await
                    }
                };
                if let Err(e) = done {
                    log::debug!("limits store: {e}");
                }
            }
        });
    }
}

/// What a request does to the store when it ends.
pub enum Finish {
    Charge {
        key: String,
        tokens: u64,
        rate: crate::limits::TokenRate,
    },
    Release {
        key: String,
    },
}

/// The tightest windows of an admitted request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Admitted {
    pub requests: Option<Window>,
    pub tokens: Option<Window>,
}

/// The Redis key of one bucket: `switchyard:limit:key:alice:r`. Key and
/// pool names are from the configuration; addresses are written in their
/// canonical form.
pub fn key_of(subject: &Subject, kind: &str) -> String {
    let mut key = String::with_capacity(48);
    let _ = match subject.id {
        SubjectId::Address(ip) => write!(key, "switchyard:limit:address:{ip}:{kind}"),
        SubjectId::Key(name) => write!(key, "switchyard:limit:key:{name}:{kind}"),
        SubjectId::Pool(name) => write!(key, "switchyard:limit:pool:{name}:{kind}"),
    };
    key
}
