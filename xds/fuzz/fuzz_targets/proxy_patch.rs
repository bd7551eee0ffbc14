//! Arbitrary text as a MeshProxyPatch modification applied to a small
//! proxy: never a panic, never half-applied, and `check_modification`'s
//! properties kept.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(broken) = kuma_xds::plugins::mesh_proxy_patch::check_modification(text) {
        panic!("{broken}");
    }
});
