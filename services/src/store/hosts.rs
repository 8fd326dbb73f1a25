//! Database URLs with several hosts, and following the primary across a failover.
//!
//! `--database-url` takes libpq's multi-host form,
//! `postgres://user@host1:5432,host2:5432/db?target_session_attrs=read-write`, as a cluster
//! with a streaming standby is usually named. sqlx connects to one host per set of options, so
//! the URL is split here into one [`PgConnectOptions`] per host, and the pool is pointed at the
//! host that accepts writes:
//!
//! - At start, the hosts are tried in order; the first that answers and is not in recovery (and
//!   not `default_transaction_read_only`) becomes the pool's host. None: the start fails,
//!   naming what each host said.
//! - A [`Follower`] task keeps one connection of its own to that host and asks it once a
//!   [`CHECK_EVERY`] whether it is still writable. When the answer is no (a standby promoted
//!   elsewhere and this host demoted) or the connection is gone (the host crashed), it tries
//!   the hosts again, in order, until one is writable, and points the pool there
//!   ([`sqlx::Pool::set_connect_options`]: the pool's own connection attempts, which retry while
//!   a host refuses, pick the new host up at their next try). Connections to the old host fail
//!   at their next use and are dropped by the pool; requests meanwhile get 503 with
//!   `Retry-After` and workers retry their writes, as in any database outage.
//! - Every new pool connection is checked too (`after_connect`): one that lands on a read-only
//!   host is refused and wakes the follower at once, so no statement runs on a standby.
//! - `LISTEN` connections come from the pool and reconnect through it, so they follow as well.
//!
//! `target_session_attrs` may be `read-write` or `primary` (the same here), or `any` (the
//! default: with several hosts, the first that answers, as libpq does). A single host without
//! the parameter is passed to sqlx unchanged, with no follower.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, PgPool};
use tokio::sync::Notify;

/// How often the follower asks the current host whether it still accepts writes.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long one host may take to answer a connection attempt during a search.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Which host a multi-host URL wants (`target_session_attrs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    /// The first host that answers.
    Any,
    /// The first host that accepts writes (`read-write`, `primary`).
    ReadWrite,
}

/// A parsed `--database-url`: one set of connect options per host, in the URL's order.
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    pub hosts: Vec<PgConnectOptions>,
    /// What each host is called in messages (`host:port`).
    pub names: Vec<String>,
    pub attrs: SessionAttrs,
}

impl DatabaseUrl {
    /// Splits `url`'s host list; every other part (user, password, database, parameters) is
    /// the same for every host.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        const HINT: &str = "expected postgres://user@host[:port][,host[:port]...]/db";
        let (scheme, rest) = url
            .split_once("://")
            .with_context(|| format!("the database URL has no `://`; {HINT}"))?;
        if scheme != "postgres" && scheme != "postgresql" {
            bail!("the database URL's scheme is `{scheme}`, not postgres; {HINT}");
        }
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (userinfo, host_list) = match authority.rfind('@') {
            Some(at) => (&authority[..=at], &authority[at + 1..]),
            None => ("", authority),
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, q),
            None => (tail, ""),
        };
        let mut attrs = None;
        let mut params = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("target_session_attrs", value)) => {
                    attrs = Some(match value {
                        "any" => SessionAttrs::Any,
                        "read-write" | "primary" => SessionAttrs::ReadWrite,
                        other => bail!(
                            "target_session_attrs={other} is not supported: use read-write \
                             (or primary) to follow the primary, or any"
                        ),
                    })
                }
                _ => params.push(pair),
            }
        }
        // One host may be empty (`postgres:///db?host=/run/postgresql`: sqlx reads the
        // socket directory from the parameters); in a list, none may.
        let hosts: Vec<&str> = host_list.split(',').collect();
        if hosts.len() > 1 && hosts.iter().any(|h| h.is_empty()) {
            bail!("the database URL has an empty host in `{host_list}`; {HINT}");
        }
        let query = if params.is_empty() {
            String::new()
        } else {
            format!("?{}", params.join("&"))
        };
        let mut parsed = Vec::with_capacity(hosts.len());
        for host in &hosts {
            let one = format!("{scheme}://{userinfo}{host}{path}{query}");
            let options: PgConnectOptions = one
                .parse()
                .with_context(|| format!("parsing the database URL (host `{host}`); {HINT}"))?;
            parsed.push(options);
        }
        Ok(Self {
            hosts: parsed,
            names: hosts.iter().map(|h| (*h).to_owned()).collect(),
            attrs: attrs.unwrap_or(SessionAttrs::Any),
        })
    }

    /// True when the pool needs a [`Follower`]: several hosts, or a host that must be writable.
    pub fn follows(&self) -> bool {
        self.hosts.len() > 1 || self.attrs == SessionAttrs::ReadWrite
    }

    /// The first host that answers and suits [`Self::attrs`], in order; the error names what
    /// each host said.
    pub async fn find_host(&self) -> anyhow::Result<usize> {
        let mut said = Vec::new();
        for (i, options) in self.hosts.iter().enumerate() {
            match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
                Err(_) => said.push(format!(
                    "{}: no answer within {CONNECT_TIMEOUT:?}",
                    self.names[i]
                )),
                Ok(Err(e)) => said.push(format!("{}: {e}", self.names[i])),
                Ok(Ok(mut conn)) => {
                    let fits = match self.attrs {
                        SessionAttrs::Any => Ok(true),
                        SessionAttrs::ReadWrite => is_writable(&mut conn).await,
                    };
                    let _ = conn.close().await;
                    match fits {
                        Ok(true) => return Ok(i),
                        Ok(false) => said.push(format!("{}: read-only (a standby)", self.names[i])),
                        Err(e) => said.push(format!("{}: {e}", self.names[i])),
                    }
                }
            }
        }
        bail!(
            "no database host {}: {}",
            match self.attrs {
                SessionAttrs::Any => "answers",
                SessionAttrs::ReadWrite => "accepts writes (target_session_attrs=read-write)",
            },
            said.join("; ")
        )
    }
}

/// Whether the server behind `conn` accepts writes (libpq's `read-write` test: not in
/// recovery, and not read-only by default).
pub async fn is_writable(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT NOT pg_is_in_recovery() AND current_setting('default_transaction_read_only') = 'off'",
    )
    .fetch_one(conn)
    .await
}

/// A pool on `url`'s first suitable host, followed across failovers when the URL asks for it
/// (the [`Follower`] is then returned with it; keep it as long as the pool).
pub async fn connect(
    url: &DatabaseUrl,
    pool_options: sqlx::postgres::PgPoolOptions,
) -> anyhow::Result<(PgPool, Option<Follower>)> {
    if !url.follows() {
        let pool = pool_options
            .connect_with(url.hosts[0].clone())
            .await
            .context("connecting to PostgreSQL")?;
        return Ok((pool, None));
    }
    let current = url.find_host().await?;
    let wake = Arc::new(Notify::new());
    let on_connect = wake.clone();
    let must_write = url.attrs == SessionAttrs::ReadWrite;
    let pool = pool_options
        .after_connect(move |conn, _meta| {
            let wake = on_connect.clone();
            Box::pin(async move {
                if must_write && !is_writable(conn).await? {
                    wake.notify_one();
                    return Err(sqlx::Error::Protocol(
                        "the database host no longer accepts writes (a standby): looking for the \
                         primary"
                            .into(),
                    ));
                }
                Ok(())
            })
        })
        .connect_with(url.hosts[current].clone())
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", url.names[current]))?;
    tracing::info!(host = %url.names[current], hosts = url.hosts.len(), "connected to the database; following its primary");
    let follower = Follower::start(pool.clone(), url.clone(), current, wake);
    Ok((pool, Some(follower)))
}

/// Keeps a pool on the writable host of a multi-host URL (see the module docs). Dropping it
/// stops the task.
pub struct Follower {
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    /// Starts following for `pool`, whose options point at `url.hosts[current]`.
    pub fn start(pool: PgPool, url: DatabaseUrl, current: usize, wake: Arc<Notify>) -> Self {
        let task = tokio::spawn(follow(pool, url, current, wake));
        Self { task }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn follow(pool: PgPool, url: DatabaseUrl, mut current: usize, wake: Arc<Notify>) {
    let mut watch: Option<PgConnection> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_EVERY) => {}
            _ = wake.notified() => {}
        }
        if pool.is_closed() {
            return;
        }
        let healthy = match watch.as_mut() {
            None => false,
            Some(conn) => {
                let check = async {
                    match url.attrs {
                        SessionAttrs::Any => conn.ping().await.map(|()| true),
                        SessionAttrs::ReadWrite => is_writable(conn).await,
                    }
                };
                matches!(
                    tokio::time::timeout(CONNECT_TIMEOUT, check).await,
                    Ok(Ok(true))
                )
            }
        };
        if healthy {
            continue;
        }
        if let Some(old) = watch.take() {
            drop(old);
            tracing::warn!(host = %url.names[current], "the database host stopped answering or accepting writes; looking for the primary");
        }
        match url.find_host().await {
            Ok(found) => {
                if found != current {
                    tracing::warn!(from = %url.names[current], to = %url.names[found], "database failover: the pool now connects to another host");
                    pool.set_connect_options(url.hosts[found].clone());
                    current = found;
                }
                watch = tokio::time::timeout(CONNECT_TIMEOUT, url.hosts[current].connect())
                    .await
                    .ok()
                    .and_then(Result::ok);
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "no database host to fail over to yet; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_passed_through() {
        let url =
            DatabaseUrl::parse("postgres://u:p@db.example:6543/nekton?sslmode=disable").unwrap();
        assert_eq!(url.hosts.len(), 1);
        assert_eq!(url.names, ["db.example:6543"]);
        assert_eq!(url.attrs, SessionAttrs::Any);
        assert!(!url.follows());
        assert_eq!(url.hosts[0].get_host(), "db.example");
        assert_eq!(url.hosts[0].get_port(), 6543);
        assert_eq!(url.hosts[0].get_username(), "u");
        assert_eq!(url.hosts[0].get_database(), Some("nekton"));
        // A socket directory given as a parameter, no host in the authority.
        let socket = DatabaseUrl::parse("postgres:///nekton?host=/run/postgresql").unwrap();
        assert_eq!(
            socket.hosts[0].get_socket().map(|p| p.to_str()),
            Some(Some("/run/postgresql"))
        );
        assert!(!socket.follows());
    }

    #[test]
    fn several_hosts_share_everything_but_the_host() {
        let url = DatabaseUrl::parse(
            "postgresql://app@10.0.0.1:5432,10.0.0.2,[::1]:5433/jobs?target_session_attrs=read-write&application_name=x",
        )
        .unwrap();
        assert_eq!(url.attrs, SessionAttrs::ReadWrite);
        assert!(url.follows());
        let hosts: Vec<(&str, u16)> = url
            .hosts
            .iter()
            .map(|o| (o.get_host(), o.get_port()))
            .collect();
        assert_eq!(
            hosts,
            [("10.0.0.1", 5432), ("10.0.0.2", 5432), ("[::1]", 5433)]
        );
        for o in &url.hosts {
            assert_eq!(o.get_username(), "app");
            assert_eq!(o.get_database(), Some("jobs"));
            assert_eq!(o.get_application_name(), Some("x"));
        }
        let primary =
            DatabaseUrl::parse("postgres://h1,h2/db?target_session_attrs=primary").unwrap();
        assert_eq!(primary.attrs, SessionAttrs::ReadWrite);
        let any = DatabaseUrl::parse("postgres://h1,h2/db").unwrap();
        assert_eq!(any.attrs, SessionAttrs::Any);
        assert!(any.follows(), "several hosts are followed even with `any`");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        for (url, says) in [
            ("mysql://h/db", "scheme"),
            ("h1,h2/db", "://"),
            ("postgres://h1,,h2/db", "empty host"),
            (
                "postgres://h1,h2/db?target_session_attrs=standby",
                "not supported",
            ),
            ("postgres://h1:notaport,h2/db", "host `h1:notaport`"),
        ] {
            let e = format!("{:#}", DatabaseUrl::parse(url).unwrap_err());
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
