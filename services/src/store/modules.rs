//! Uploaded Wasm modules, content-addressed (`sha256:<hex>`) per tenant.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use super::StoreError;
use crate::model::Module;

/// Stores a module unless the tenant already has it. Returns the record and whether it was new.
pub async fn put(
    pool: &PgPool,
    tenant: &str,
    digest: &str,
    bytes: &[u8],
) -> Result<(Module, bool), StoreError> {
    let row = sqlx::query(
        "INSERT INTO modules (tenant_id, digest, size_bytes, bytes) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (tenant_id, digest) DO UPDATE SET digest = EXCLUDED.digest \
         RETURNING size_bytes, created_at, (xmax = 0) AS inserted",
    )
    .bind(tenant)
    .bind(digest)
    .bind(bytes.len() as i64)
    .bind(bytes)
    .fetch_one(pool)
    .await?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    let module = Module {
        digest: digest.to_string(),
        size_bytes: row.try_get("size_bytes")?,
        created_at,
    };
    Ok((module, row.try_get("inserted")?))
}

/// True if the tenant has uploaded this module.
pub async fn exists<'e>(
    db: impl sqlx::PgExecutor<'e>,
    tenant: &str,
    digest: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM modules WHERE tenant_id = $1 AND digest = $2)",
    )
    .bind(tenant)
    .bind(digest)
    .fetch_one(db)
    .await?)
}

/// A module's bytes by digest, from any tenant (the content is the digest's, whoever uploaded it).
pub async fn bytes(pool: &PgPool, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT bytes FROM modules WHERE digest = $1 LIMIT 1")
            .bind(digest)
            .fetch_optional(pool)
            .await?,
    )
}

/// A tenant's modules, newest first, after the position `before` (`created_at`, digest) of the
/// previous page's last module; at most `limit`.
pub async fn list(
    pool: &PgPool,
    tenant: &str,
    before: Option<(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<Module>, StoreError> {
    let (at, digest) = before.unzip();
    let rows = sqlx::query(
        "SELECT digest, size_bytes, created_at FROM modules WHERE tenant_id = $1 \
         AND ($2::timestamptz IS NULL OR (created_at, digest) < ($2, $3)) \
         ORDER BY created_at DESC, digest DESC LIMIT $4",
    )
    .bind(tenant)
    .bind(at)
    .bind(digest)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(Module {
                digest: r.try_get("digest")?,
                size_bytes: r.try_get("size_bytes")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .collect()
}
