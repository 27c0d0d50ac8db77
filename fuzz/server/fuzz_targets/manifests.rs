//! The manifest reader, YAML and JSON: any text gives objects or an error
//! with a line, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let path = if selector & 1 == 0 {
        "fuzz.yaml"
    } else {
        "fuzz.json"
    };
    if let Err(error) = kubewire::sources::manifests::parse_manifest(Path::new(path), text) {
        let message = error.to_string();
        assert!(message.starts_with(path), "{message}");
    }
});
