//! Content digests: stable 64/128-bit hashes of plain data, used for
//! resource versions and cache keys.

use std::hash::{Hash, Hasher};

use xxhash_rust::xxh3::Xxh3;

/// The 64-bit digest of a hashable value.
pub fn digest<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut h = Xxh3::new();
    value.hash(&mut h);
    h.finish()
}

/// The 128-bit digest of a hashable value, for keys where a collision
/// would serve one proxy another's config.
pub fn digest128<T: Hash + ?Sized>(value: &T) -> u128 {
    let mut h = Xxh3::new();
    value.hash(&mut h);
    h.digest128()
}

/// Feeds serialized JSON into a hasher without building the string.
pub struct JsonDigest(Xxh3);

impl JsonDigest {
    /// A fresh digest.
    pub fn new() -> Self {
        JsonDigest(Xxh3::new())
    }

    /// Adds a value's JSON encoding.
    pub fn add<T: serde::Serialize + ?Sized>(&mut self, value: &T) {
        // Writing into a hasher cannot fail, and our values serialize.
        let _ = serde_json::to_writer(&mut *self, value);
        self.0.write_u8(0xff);
    }

    /// The 128-bit digest of everything added.
    pub fn finish128(&self) -> u128 {
        self.0.digest128()
    }
}

impl Default for JsonDigest {
    fn default() -> Self {
        Self::new()
    }
}

impl std::io::Write for JsonDigest {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
