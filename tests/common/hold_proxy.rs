//! A request-holding HTTP proxy for end-to-end race tests: it sits between a client (casctl or
//! the library's S3 backend) and the real S3 server, and for requests matching a rule it can hold
//! them until the test releases them, or forward them and then answer the client with an error
//! as if the response was lost (so the client's retry finds the work already done).
//!
//! One request per client connection (the proxy answers with `Connection: close`), forwarded
//! byte for byte, so request signatures stay valid. Requests matching no rule pass untouched.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// What to do with a matching request.
#[derive(Clone, Debug)]
pub enum Action {
    /// Wait until [`Held::release`], then forward.
    Hold,
    /// Forward at once (the work lands), then keep the server's answer from the client until
    /// [`Held::release`]. The rule counts the request as arrived once the answer is in, so a
    /// test waiting on [`Held::arrived`] knows the work is durable and the client paused.
    HoldAnswer,
    /// Forward, then answer the client 500 whatever the server said (the work landed, the
    /// client believes it failed).
    LoseResponse,
}

/// A rule: requests whose method equals `method` (any method for `*`) and whose path contains
/// `path`; the first `skip` of them pass untouched, the next `times` get `action`.
struct Rule {
    method: String,
    path: String,
    skip: usize,
    times: usize,
    action: Action,
    held: Held,
}

/// The handle of a rule: how many requests it matched, and (for `Hold`) their release.
#[derive(Clone)]
pub struct Held {
    matched: watch::Sender<usize>,
    released: Arc<Notify>,
    open: Arc<Mutex<bool>>,
}

impl Held {
    /// Waits until at least `n` requests matched the rule.
    pub async fn arrived(&self, n: usize) {
        let mut rx = self.matched.subscribe();
        rx.wait_for(|m| *m >= n).await.expect("proxy alive");
    }

    /// How many requests matched the rule so far.
    pub fn count(&self) -> usize {
        *self.matched.borrow()
    }

    /// Lets every held request (and every later one) through.
    pub fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.released.notify_waiters();
    }

    async fn wait_released(&self) {
        loop {
            let notified = self.released.notified();
            if *self.open.lock().unwrap() {
                return;
            }
            notified.await;
        }
    }
}

/// A running proxy.
pub struct HoldProxy {
    /// `http://127.0.0.1:PORT`: use it as the endpoint URL.
    pub url: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl HoldProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port.
    pub async fn start(upstream: &str) -> HoldProxy {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let requests: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let (r, n) = (rules.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), r.clone(), n.clone()));
            }
        });
        HoldProxy {
            url,
            rules,
            requests,
        }
    }

    /// How many requests with `method` (any for `*`) whose path contains `path` reached the
    /// proxy so far (whole ones, whatever their rule).
    pub fn requests(&self, method: &str, path: &str) -> usize {
        let log = self.requests.lock().unwrap();
        log.iter()
            .filter(|(m, p)| (method == "*" || m == method) && p.contains(path))
            .count()
    }

    /// Adds a rule for the next `times` requests with `method` whose path contains `path`.
    pub fn rule(&self, method: &str, path: &str, times: usize, action: Action) -> Held {
        self.rule_after(0, method, path, times, action)
    }

    /// Like [`HoldProxy::rule`], but the first `skip` matching requests pass untouched.
    pub fn rule_after(
        &self,
        skip: usize,
        method: &str,
        path: &str,
        times: usize,
        action: Action,
    ) -> Held {
        let held = Held {
            matched: watch::channel(0).0,
            released: Arc::new(Notify::new()),
            open: Arc::new(Mutex::new(false)),
        };
        self.rules.lock().unwrap().push(Rule {
            method: method.into(),
            path: path.into(),
            skip,
            times,
            action,
            held: held.clone(),
        });
        held
    }
}

/// Reads one request (head and `Content-Length` body), applies the first matching rule, relays
/// the server's answer until it closes.
async fn serve(
    mut client: TcpStream,
    upstream: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
) {
    let Some(request) = read_request(&mut client).await else {
        return;
    };
    let line =
        String::from_utf8_lossy(&request[..request.iter().position(|&b| b == b'\r').unwrap_or(0)])
            .to_string();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    requests.lock().unwrap().push((method.into(), path.into()));
    let matched = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| {
                r.times > 0 && (r.method == "*" || r.method == method) && path.contains(&r.path)
            })
            .and_then(|r| {
                let pass = r.skip > 0;
                r.skip = r.skip.saturating_sub(1);
                (!pass).then_some(r)
            })
            .map(|r| {
                r.times -= 1;
                if !matches!(r.action, Action::HoldAnswer) {
                    r.held.matched.send_modify(|m| *m += 1);
                }
                (r.action.clone(), r.held.clone())
            })
    };
    if let Some((Action::Hold, held)) = &matched {
        held.wait_released().await;
    }
    let Ok(mut server) = TcpStream::connect(&upstream).await else {
        return;
    };
    if server.write_all(&request).await.is_err() {
        return;
    }
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer).await;
    if let Some((Action::HoldAnswer, held)) = &matched {
        held.matched.send_modify(|m| *m += 1);
        held.wait_released().await;
    }
    if let Some((Action::LoseResponse, _)) = matched {
        answer =
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                .to_vec();
    }
    let _ = client.write_all(&answer).await;
    let _ = client.shutdown().await;
}

/// The request's bytes with its `Connection` header replaced by `close`.
async fn read_request(client: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut len = 0usize;
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if lower.starts_with("connection:") || (line.is_empty() && i > 0) {
            continue;
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("connection: close\r\n\r\n");
    while buf.len() < head_end + len {
        let n = client.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut request = out.into_bytes();
    request.extend_from_slice(&buf[head_end..head_end + len]);
    Some(request)
}
