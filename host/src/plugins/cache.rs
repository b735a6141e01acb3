//! The on-disk cache of compiled components: one file per (wasm bytes, engine settings), named by
//! their hashes, written atomically, and read back only under exactly that name.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::component::Component;

/// Largest cache file we agree to read; a compiled plugin is a few MiB.
const MAX_ARTIFACT_BYTES: u64 = 512 << 20;

/// Hex SHA-256 of `bytes`.
pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Hex digest of everything that decides whether code compiled by `engine` can be loaded by
/// another engine (target, compiler flags, wasm features, wasmtime version).
pub(super) fn engine_hash(engine: &wasmtime::Engine) -> String {
    // Feeding the `Hash` impl into SHA-256, rather than std's `DefaultHasher`, keeps the digest
    // stable across Rust releases, so an upgraded host still finds its cache.
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            unreachable!("only the SHA-256 digest is used")
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// Tells a component from a core module or a non-wasm file, with a message that says which.
pub(super) fn check_is_component(bytes: &[u8]) -> Result<(), String> {
    const CORE_MODULE: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    match bytes {
        [0x00, b'a', b's', b'm', rest @ ..] if rest.starts_with(&COMPONENT) => Ok(()),
        [0x00, b'a', b's', b'm', rest @ ..] if rest.starts_with(&CORE_MODULE) => Err(
            "this is a core WebAssembly module, not a component: build the plugin for \
             wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
                .into(),
        ),
        [0x00, b'a', b's', b'm', ..] => Err("unsupported WebAssembly binary version".into()),
        _ => Err("not a WebAssembly file (no \\0asm header)".into()),
    }
}

/// The compiled component for `bytes`: read from `cache_dir` if an earlier load left it there,
/// else compiled and stored. Returns whether it came from the cache.
pub(super) fn compile_or_read(
    engine: &wasmtime::Engine,
    bytes: &[u8],
    wasm_sha256: &str,
    engine_hash: &str,
    cache_dir: &Path,
    plugin: &str,
) -> anyhow::Result<(Component, bool)> {
    let file_name = format!("{wasm_sha256}-{engine_hash}.cwasm");
    let path = cache_dir.join(&file_name);
    match read_artifact(engine, &path) {
        Ok(Some(component)) => return Ok((component, true)),
        Ok(None) => {}
        Err(e) => {
            // A stale or damaged file: compile afresh and overwrite it.
            tracing::warn!(plugin, path = %path.display(), "ignoring cached plugin code: {e:#}");
            let _ = fs::remove_file(&path);
        }
    }
    let component = Component::from_binary(engine, bytes)
        .map_err(anyhow::Error::from)
        .context("compilation failed")?;
    if let Err(e) = write_artifact(&component, cache_dir, &file_name) {
        tracing::warn!(plugin, dir = %cache_dir.display(), "cannot cache plugin code: {e:#}");
    }
    Ok((component, false))
}

/// Reads the artifact at `path` if it is there as a plain file.
fn read_artifact(engine: &wasmtime::Engine, path: &Path) -> anyhow::Result<Option<Component>> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Only a regular file we could have written: never follow a link planted in the directory.
    anyhow::ensure!(meta.file_type().is_file(), "not a regular file");
    anyhow::ensure!(
        meta.len() <= MAX_ARTIFACT_BYTES,
        "too large ({} bytes)",
        meta.len()
    );
    let artifact = fs::read(path)?;
    Ok(Some(deserialize(engine, &artifact)?))
}

/// Loads compiled code that [`write_artifact`] stored.
#[expect(
    unsafe_code,
    reason = "Component::deserialize trusts its input to be wasmtime output; it is ours"
)]
fn deserialize(engine: &wasmtime::Engine, artifact: &[u8]) -> anyhow::Result<Component> {
    // SAFETY: `artifact` is the content of a file in the host's own cache directory, under the
    // name that `write_artifact` gives the output of `Component::serialize` for these wasm
    // bytes and this engine configuration, and files there only appear whole (temp + rename).
    // Wasmtime still checks the header and the engine's compatibility before using it, and the
    // bytes are copied into memory, so later changes to the file cannot reach loaded code.
    let component = unsafe { Component::deserialize(engine, artifact) };
    Ok(component?)
}

/// Stores `component`'s compiled code as `cache_dir/file_name`, atomically.
fn write_artifact(component: &Component, cache_dir: &Path, file_name: &str) -> anyhow::Result<()> {
    static UNIQUE: AtomicU64 = AtomicU64::new(0);
    let artifact = component.serialize()?;
    fs::create_dir_all(cache_dir)?;
    let temp = cache_dir.join(format!(
        ".{file_name}.{}.{}.tmp",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)?;
        file.write_all(&artifact)?;
        file.sync_all()?;
        fs::rename(&temp, cache_dir.join(file_name))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    Ok(written?)
}
