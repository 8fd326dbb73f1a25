//! `nekton webhook create|ls|rm|deliveries|redeliver`: the tenant's webhook endpoints.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use uuid::Uuid;

use super::client::truncate_chars;
use super::commands::{ServerArgs, time_cell};
use crate::api::types::{Delivery, NewWebhook, Webhook, WebhookEvent};

/// `nekton webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    #[command(subcommand)]
    pub command: WebhookCommand,
}

#[derive(Debug, Subcommand)]
pub enum WebhookCommand {
    /// Create an endpoint and print its signing secret (shown this once only).
    Create {
        /// Where to POST events (http or https).
        #[arg(value_name = "URL")]
        url: String,
        /// An event to send (repeatable): job.completed, batch.completed. Default: all.
        #[arg(long = "event", value_name = "EVENT", value_parser = parse_event)]
        events: Vec<WebhookEvent>,
        /// Print the answer as JSON (with the secret).
        #[arg(long)]
        json: bool,
    },
    /// List the endpoints.
    Ls {
        /// Print them as JSON (one array) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete endpoints (events not yet delivered to them are dropped).
    Rm {
        #[arg(value_name = "ID", required = true)]
        ids: Vec<Uuid>,
    },
    /// Show an endpoint's deliveries, newest first, with their attempts.
    Deliveries {
        #[arg(value_name = "ID")]
        id: Uuid,
        /// Deliveries to show (the server caps it at 200).
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: u32,
        /// Print the page as JSON (payloads and every attempt).
        #[arg(long)]
        json: bool,
    },
    /// Send a delivery again now (same webhook-id and body).
    Redeliver {
        #[arg(value_name = "ID")]
        id: Uuid,
        #[arg(value_name = "DELIVERY")]
        delivery: Uuid,
    },
}

fn parse_event(s: &str) -> Result<WebhookEvent, String> {
    WebhookEvent::parse(s).ok_or_else(|| {
        format!(
            "unknown event {s:?}; events are {}",
            WebhookEvent::ALL.map(|e| e.as_str()).join(", ")
        )
    })
}

fn events_text(events: &[WebhookEvent]) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `nekton webhook ...`; returns the exit code.
pub async fn webhook(args: WebhookArgs, server: &ServerArgs) -> Result<i32> {
    let client = server.client()?;
    match args.command {
        WebhookCommand::Create { url, events, json } => {
            let new = NewWebhook {
                url: url.clone(),
                events: (!events.is_empty())
                    .then(|| events.iter().map(|e| e.as_str().to_string()).collect()),
            };
            let created = client
                .create_webhook(&new)
                .await
                .with_context(|| format!("creating a webhook for {url} failed"))?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&created)?)?;
            } else {
                crate::outln!("id:     {}", created.webhook.id)?;
                crate::outln!("url:    {}", created.webhook.url)?;
                crate::outln!("events: {}", events_text(&created.webhook.events))?;
                crate::outln!("secret: {}", created.secret)?;
                eprintln!(
                    "nekton: the secret is shown this once; give it to your receiver to verify each request's webhook-signature"
                );
            }
            Ok(0)
        }
        WebhookCommand::Ls { json } => {
            let hooks = client.list_webhooks().await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&hooks)?)?;
            } else {
                crate::out!("{}", webhooks_table(&hooks))?;
            }
            Ok(0)
        }
        WebhookCommand::Rm { ids } => {
            let mut code = 0;
            for id in ids {
                match client.delete_webhook(id).await {
                    Ok(w) => crate::outln!("{} deleted ({})", w.id, w.url)?,
                    Err(e) => {
                        eprintln!("nekton: deleting webhook {id}: {e:#}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        WebhookCommand::Deliveries { id, limit, json } => {
            let page = client.webhook_deliveries(id, None, Some(limit)).await?;
            if json {
                crate::outln!("{}", serde_json::to_string_pretty(&page)?)?;
            } else {
                crate::out!("{}", deliveries_table(&page.deliveries))?;
                if let Some(c) = page.next_cursor {
                    eprintln!(
                        "nekton: older deliveries exist (next cursor {c}); use --json and the API to page"
                    );
                }
            }
            Ok(0)
        }
        WebhookCommand::Redeliver { id, delivery } => {
            let d = client.redeliver_webhook(id, delivery).await?;
            crate::outln!(
                "delivery {} queued again (after {} attempts); follow it with `nekton webhook deliveries {id}`",
                d.id,
                d.attempts.len()
            )?;
            Ok(0)
        }
    }
}

fn table<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(&header.map(String::from));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

fn webhooks_table(hooks: &[Webhook]) -> String {
    let rows: Vec<[String; 4]> = hooks
        .iter()
        .map(|w| {
            [
                w.id.to_string(),
                events_text(&w.events),
                time_cell(&w.created_at),
                w.url.clone(),
            ]
        })
        .collect();
    table(["ID", "EVENTS", "CREATED", "URL"], &rows)
}

fn deliveries_table(deliveries: &[Delivery]) -> String {
    let rows: Vec<[String; 6]> = deliveries
        .iter()
        .map(|d| {
            let last = match (&d.last_error, d.last_status) {
                (Some(e), _) => truncate_chars(e, 120),
                (None, Some(s)) => s.to_string(),
                (None, None) => "-".to_string(),
            };
            [
                d.id.to_string(),
                d.event.as_str().to_string(),
                d.state.as_str().to_string(),
                d.attempts.len().to_string(),
                time_cell(&d.created_at),
                last,
            ]
        })
        .collect();
    table(
        ["DELIVERY", "EVENT", "STATE", "ATTEMPTS", "CREATED", "LAST"],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_by_their_wire_names() {
        assert_eq!(parse_event("job.completed"), Ok(WebhookEvent::JobCompleted));
        assert_eq!(
            parse_event("batch.completed"),
            Ok(WebhookEvent::BatchCompleted)
        );
        assert!(
            parse_event("job.done")
                .unwrap_err()
                .contains("job.completed")
        );
    }

    #[test]
    fn the_webhook_table_lines_up() {
        let w = Webhook {
            id: Uuid::nil(),
            url: "https://example.com/h".into(),
            events: vec![WebhookEvent::JobCompleted],
            created_at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
        };
        let t = webhooks_table(&[w]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("ID  "), "{t}");
        assert!(lines[1].ends_with("https://example.com/h"), "{t}");
        assert_eq!(lines[0].find("EVENTS"), lines[1].find("job.completed"));
    }
}
