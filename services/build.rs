//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds
//! `../migrations` at compile time, and cargo does not otherwise know it depends on that folder
//! (a new migration file would silently not be applied by a stale build).

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
