//! Images in an OCI registry, read lazily over the distribution API v2:
//! `docker://HOST[:PORT]/REPO[:TAG|@DIGEST]` references, the HTTP client
//! with its auth and TLS, registries.conf (mirrors, rewrites, blocks),
//! blobs read by Range, and the store image resolution reads through.

pub mod blob;
pub mod certs;
pub mod challenge;
pub mod client;
pub mod cred_helper;
pub mod credential;
pub mod credentials;
pub mod index_artifact;
pub mod reference;
pub mod registries_conf;
pub mod settings;
pub mod store;
pub mod tls;

pub use reference::RepositoryName;
pub use store::RegistryStore;
