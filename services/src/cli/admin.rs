//! Tenancy commands: `nekton tenant`, `nekton token`, `nekton login`, `nekton usage`,
//! `nekton audit`, `nekton whoami`.

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{Value, json};

use super::commands::ServerArgs;

/// `nekton tenant`.
#[derive(Debug, Args)]
pub struct TenantArgs {
    #[command(subcommand)]
    pub command: TenantCommand,
}

/// Quota flags shared by `tenant create` and `tenant set`. `none` removes a quota.
#[derive(Debug, Args, Default)]
pub struct QuotaFlags {
    /// Share of the workers when several tenants have work (1-1000).
    #[arg(long)]
    pub weight: Option<i32>,
    /// Jobs running at once (`none`: no cap).
    #[arg(long, value_name = "N|none")]
    pub max_running: Option<String>,
    /// Jobs waiting (queued or scheduled) at once.
    #[arg(long, value_name = "N|none")]
    pub max_queued: Option<String>,
    /// Submissions per second (token bucket).
    #[arg(long, value_name = "PER_SECOND|none")]
    pub submit_rate: Option<String>,
    /// Submissions allowed at once above the rate.
    #[arg(long, value_name = "N|none")]
    pub submit_burst: Option<String>,
    /// Largest memory limit a job may have, in bytes.
    #[arg(long, value_name = "BYTES|none")]
    pub max_memory_bytes: Option<String>,
    /// Largest wall-time limit, in ms.
    #[arg(long, value_name = "MS|none")]
    pub max_wall_time_ms: Option<String>,
    /// Largest CPU-time limit (containers), in ms.
    #[arg(long, value_name = "MS|none")]
    pub max_cpu_time_ms: Option<String>,
    /// Largest output kept per stream, in bytes.
    #[arg(long, value_name = "BYTES|none")]
    pub max_output_bytes: Option<String>,
    /// Whether jobs may use `network: bridge`.
    #[arg(long, value_name = "true|false")]
    pub allow_bridge: Option<bool>,
}

impl QuotaFlags {
    fn to_json(&self) -> Result<serde_json::Map<String, Value>> {
        let mut m = serde_json::Map::new();
        if let Some(w) = self.weight {
            m.insert("weight".into(), json!(w));
        }
        let mut put = |name: &str, v: &Option<String>, float: bool| -> Result<()> {
            if let Some(v) = v {
                let value = if v == "none" || v == "null" {
                    Value::Null
                } else if float {
                    json!(v.parse::<f64>().with_context(|| format!(
                        "--{} takes a number or `none`, not {v:?}",
                        name.replace('_', "-")
                    ))?)
                } else {
                    json!(v.parse::<i64>().with_context(|| format!(
                        "--{} takes a whole number or `none`, not {v:?}",
                        name.replace('_', "-")
                    ))?)
                };
                m.insert(name.into(), value);
            }
            Ok(())
        };
        put("max_running", &self.max_running, false)?;
        put("max_queued", &self.max_queued, false)?;
        put("submit_rate", &self.submit_rate, true)?;
        put("submit_burst", &self.submit_burst, false)?;
        put("max_memory_bytes", &self.max_memory_bytes, false)?;
        put("max_wall_time_ms", &self.max_wall_time_ms, false)?;
        put("max_cpu_time_ms", &self.max_cpu_time_ms, false)?;
        put("max_output_bytes", &self.max_output_bytes, false)?;
        if let Some(b) = self.allow_bridge {
            m.insert("allow_bridge".into(), json!(b));
        }
        Ok(m)
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant (admin).
    Create {
        name: String,
        #[command(flatten)]
        quotas: QuotaFlags,
    },
    /// List tenants and their quotas (admin).
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one tenant (admin).
    Get { name: String },
    /// Change a tenant's quotas (admin); `none` removes one.
    Set {
        name: String,
        #[command(flatten)]
        quotas: QuotaFlags,
    },
}

/// `nekton token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub command: TokenCommand,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print only the token on stdout (`TOKEN=$(nekton token create ...)`).
    /// It is shown this once.
    Create {
        /// The token's tenant (default: yours).
        #[arg(long)]
        tenant: Option<String>,
        /// A scope: jobs:read, jobs:write, modules:write, images:write, admin (repeat the flag;
        /// default: jobs:read, jobs:write, modules:write).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// A label for listings.
        #[arg(long, default_value = "")]
        name: String,
        /// When it stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long, value_name = "TIME")]
        expires_at: Option<String>,
    },
    /// List tokens (never their secrets; admin).
    Ls {
        /// Only this tenant's.
        #[arg(long)]
        tenant: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: it stops working everywhere within a second.
    Revoke { id: String },
}

/// `nekton login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// The token (default: read one line from standard input, so it stays out of shell history).
    #[arg(value_name = "TOKEN")]
    pub token: Option<String>,
}

/// `nekton usage`.
#[derive(Debug, Args)]
pub struct UsageArgs {
    /// From (RFC 3339; default 30 days ago).
    #[arg(long)]
    pub from: Option<String>,
    /// To (RFC 3339; default now).
    #[arg(long)]
    pub to: Option<String>,
    /// Another tenant's usage (admin).
    #[arg(long)]
    pub tenant: Option<String>,
}

/// `nekton audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Entries to show (newest first).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
}

fn pretty(v: &Value) -> Result<()> {
    crate::outln!("{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// A record's `scopes` array, joined.
fn scope_list(v: &Value, sep: &str) -> String {
    v["scopes"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(sep)
        })
        .unwrap_or_default()
}

fn opt(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn tenant(args: TenantArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    match args.command {
        TenantCommand::Create { name, quotas } => {
            let mut body = quotas.to_json()?;
            body.insert("id".into(), json!(name));
            let t = client
                .call_json(Method::POST, "v1/tenants", Some(&Value::Object(body)))
                .await
                .with_context(|| format!("creating tenant {name} failed"))?;
            pretty(&t)?;
        }
        TenantCommand::Ls { json } => {
            let list = client.call_json(Method::GET, "v1/tenants", None).await?;
            if json {
                pretty(&list)?;
            } else {
                crate::outln!(
                    "{:<24} {:>6} {:>11} {:>10} {:>11} {:>6}",
                    "TENANT",
                    "WEIGHT",
                    "MAX_RUNNING",
                    "MAX_QUEUED",
                    "SUBMIT_RATE",
                    "BRIDGE"
                )?;
                for t in list.as_array().into_iter().flatten() {
                    crate::outln!(
                        "{:<24} {:>6} {:>11} {:>10} {:>11} {:>6}",
                        opt(t, "id"),
                        opt(t, "weight"),
                        opt(t, "max_running"),
                        opt(t, "max_queued"),
                        opt(t, "submit_rate"),
                        opt(t, "allow_bridge")
                    )?;
                }
            }
        }
        TenantCommand::Get { name } => {
            pretty(
                &client
                    .call_json(Method::GET, &format!("v1/tenants/{name}"), None)
                    .await?,
            )?;
        }
        TenantCommand::Set { name, quotas } => {
            let body = quotas.to_json()?;
            anyhow::ensure!(
                !body.is_empty(),
                "nothing to change: give a quota flag such as --max-running 4 (see `nekton tenant set --help`)"
            );
            let t = client
                .call_json(
                    Method::PATCH,
                    &format!("v1/tenants/{name}"),
                    Some(&Value::Object(body)),
                )
                .await
                .with_context(|| format!("changing tenant {name} failed"))?;
            pretty(&t)?;
        }
    }
    Ok(0)
}

pub async fn token(args: TokenArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    match args.command {
        TokenCommand::Create {
            tenant,
            scopes,
            name,
            expires_at,
        } => {
            let scopes = if scopes.is_empty() {
                vec![
                    "jobs:read".into(),
                    "jobs:write".into(),
                    "modules:write".into(),
                ]
            } else {
                scopes
            };
            let body = json!({ "tenant": tenant, "scopes": scopes, "name": name, "expires_at": expires_at });
            let created = client
                .call_json(Method::POST, "v1/tokens", Some(&body))
                .await
                .context("creating a token failed")?;
            let secret = created["token"]
                .as_str()
                .context("the server's answer holds no token")?;
            // Only the token on stdout, so scripts can capture it; the rest on stderr.
            crate::outln!("{secret}")?;
            eprintln!(
                "nekton: token {} of tenant {} with {}; it is not shown again",
                opt(&created, "id"),
                opt(&created, "tenant"),
                scope_list(&created, ", ")
            );
        }
        TokenCommand::Ls { tenant, json } => {
            let path = match &tenant {
                Some(t) => format!("v1/tokens?tenant={t}"),
                None => "v1/tokens".into(),
            };
            let list = client.call_json(Method::GET, &path, None).await?;
            if json {
                pretty(&list)?;
            } else {
                crate::outln!(
                    "{:<36} {:<16} {:<8} {:<44} {:<20} {}",
                    "ID",
                    "TENANT",
                    "TOKEN",
                    "SCOPES",
                    "LAST USED",
                    "STATE"
                )?;
                for t in list.as_array().into_iter().flatten() {
                    let state = if !t["revoked_at"].is_null() {
                        "revoked"
                    } else if t["expires_at"].as_str().is_some_and(|e| {
                        chrono::DateTime::parse_from_rfc3339(e)
                            .is_ok_and(|e| e < chrono::Utc::now())
                    }) {
                        "expired"
                    } else {
                        "live"
                    };
                    let scopes = scope_list(t, ",");
                    crate::outln!(
                        "{:<36} {:<16} {:<8} {:<44} {:<20} {}",
                        opt(t, "id"),
                        opt(t, "tenant"),
                        opt(t, "hint"),
                        scopes,
                        opt(t, "last_used_at").chars().take(19).collect::<String>(),
                        state
                    )?;
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let t = client
                .call_json(Method::DELETE, &format!("v1/tokens/{id}"), None)
                .await
                .with_context(|| format!("revoking token {id} failed"))?;
            eprintln!("nekton: token {} revoked", opt(&t, "id"));
        }
    }
    Ok(0)
}

pub async fn login(args: LoginArgs, server: &ServerArgs) -> Result<i32> {
    let token = match args.token {
        Some(t) => t,
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .context("reading the token from standard input")?;
            line
        }
    };
    let token = token.trim().to_string();
    anyhow::ensure!(
        crate::model::auth::looks_like_token(&token),
        "that is not an API token (they are `nk_` and 32 letters or digits)"
    );
    // Check it before saving it.
    let client = super::Client::with_token(&server.server, Some(&token))?;
    let me = client
        .call_json(Method::GET, "v1/me", None)
        .await
        .with_context(|| format!("the server at {} did not accept that token", server.server))?;
    let path = super::credentials::store(&server.server, Some(&token))?;
    eprintln!(
        "nekton: logged in to {} as tenant {} ({}); token saved in {}",
        server.server,
        opt(&me, "tenant"),
        scope_list(&me, ", "),
        path.display()
    );
    Ok(0)
}

pub async fn logout(server: &ServerArgs) -> Result<i32> {
    let path = super::credentials::store(&server.server, None)?;
    eprintln!(
        "nekton: forgot the token for {} ({})",
        server.server,
        path.display()
    );
    Ok(0)
}

pub async fn whoami(server: &ServerArgs) -> Result<i32> {
    let me = server
        .client()?
        .call_json(Method::GET, "v1/me", None)
        .await?;
    pretty(&me)?;
    Ok(0)
}

pub async fn usage(args: UsageArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    let mut url = client.url("v1/usage")?;
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in [
            ("from", &args.from),
            ("to", &args.to),
            ("tenant", &args.tenant),
        ] {
            if let Some(v) = v {
                q.append_pair(k, v);
            }
        }
    }
    let path = format!("v1/usage?{}", url.query().unwrap_or_default());
    pretty(&client.call_json(Method::GET, &path, None).await?)?;
    Ok(0)
}

pub async fn audit(args: AuditArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    let list = client
        .call_json(Method::GET, &format!("v1/audit?limit={}", args.limit), None)
        .await?;
    for e in list.as_array().into_iter().flatten() {
        crate::outln!(
            "{}  {:<16} {:<14} {:<38} {}",
            opt(e, "at").chars().take(19).collect::<String>(),
            opt(e, "tenant"),
            opt(e, "action"),
            opt(e, "target"),
            e["detail"]
        )?;
    }
    Ok(0)
}
